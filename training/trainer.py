"""The training loop: pre-editor → codec proxy → losses vs the original source.

```
 bank of NV12 sequences ─> batch [B, T, crop*3/2, crop] (float code values)
   ─> PreEditorNet(frames, qp)  (qp ~ U(qp_range) per sequence, same for its frames)
   ─> CodecProxy(codec ~ config.codecs, block size ~ {4, 8, 16, 32})  ─> recon, bits
   ─> Losses(source, recon, recon_plain, bits, bits_plain)  ─> Adam step
 every ckpt_every: checkpoint (model + optimiser + step + RNG)  ·  every val_every: real-encoder BD-rate
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import signal
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from preedit import codecs
from preedit.errors import ModelError, UsageError
from preedit.network import PreEditorNet, save_checkpoint
from preedit.paths import REPO_ROOT
from preedit.qp import av1_quantizer_for_model_qp
from preedit.training.config import TrainConfig
from preedit.training.data import add_grain, build_bank, sample_batch
from preedit.training.encoders import encode_decode
from preedit.training.kappa import KappaTable
from preedit.training.losses import Losses
from preedit.training.objective import (BDRateObjective, FrameTypeCalibration, directional_log_rate,
                                        real_encoder_settings)
from preedit.training.proxy import BLOCK_SIZES, CodecProxy, to_codec_pixels

LOG = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    """"auto" → CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but no CUDA device is available; valid here: ['auto', 'cpu']")
    return torch.device(name)


def load_calibration(cfg: TrainConfig) -> dict:
    if not cfg.calibration:
        return {}
    path = Path(cfg.calibration)
    if not path.is_absolute() and not path.is_file():
        path = REPO_ROOT / path
    if not path.is_file():
        LOG.warning("calibration file %s not found; proxy rate scales stay at 1", path)
        return {}
    return json.loads(path.read_text())


def real_codec_forward(edited: torch.Tensor, proxy_recon: torch.Tensor, qp: torch.Tensor, codec: str, preset: str, mode: str = "qp", av1_preset: str = "8", packets: Optional[list] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """x̂ = proxy + sg(real − proxy): real decoded pixels forward, the proxy's gradient backward.

    Args:
        edited: pre-edited frames, float NV12 `[B, T, H*3/2, W]`.
        proxy_recon: the proxy's reconstruction of them, same layout (carries the gradient).
        qp: model QP per sequence `[B]`.
        codec: proxy codec family ("hevc" → libx265 at QP, "av1" → libsvtav1 at the AV1 quantizer
            of equal quality, `preedit.qp.av1_quantizer_for_model_qp`).
        preset: libx265 preset of mode "qp" (SVT-AV1 uses preset 12 there).
        mode: "qp" (fixed QP) or "crf" (the evaluation settings, `objective.real_encoder_settings`:
            libx265 medium CRF = QP, SVT-AV1 preset `av1_preset` at the CRF of equal quality).
        av1_preset: SVT-AV1 preset of mode "crf".
        packets: when a list, the real bits per packet of each sequence (decode order) are appended.

    Returns:
        `(x̂, bits)`: the reconstruction and the real encoder's bits per sequence `[B]` (float64).
    """
    pixels = to_codec_pixels(edited.detach()).to(torch.uint8).cpu().numpy()
    real, bits = [], []

    for seq, q in zip(pixels, qp.tolist()):
        if mode == "crf":
            enc, value, pre = real_encoder_settings(codec, q, av1_preset=av1_preset)
            rt = encode_decode(seq, enc, value, preset=pre, mode="crf")
        elif codec == "hevc":
            rt = encode_decode(seq, codecs.ENCODER_OF["hevc"], int(round(q)), preset=preset)
        else:
            rt = encode_decode(seq, codecs.ENCODER_OF["av1"], int(round(av1_quantizer_for_model_qp(q, "qp"))), preset="12")
        real.append(torch.from_numpy(rt.decoded))
        bits.append(rt.total_bits)
        if packets is not None:
            packets.append(list(rt.bits))
    real_t = torch.stack(real).to(proxy_recon.device, proxy_recon.dtype)
    return proxy_recon + (real_t - proxy_recon).detach(), torch.tensor(bits, dtype=torch.float64)


class Trainer:
    """Holds the model, proxies, losses, data and optimiser of one run."""

    def __init__(self, cfg: TrainConfig, bank: Optional[np.ndarray] = None) -> None:
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.net = PreEditorNet(cfg.net).to(self.device)
        cal = load_calibration(cfg)
        self.proxies = {}
        for codec in cfg.codecs:
            scales = cal.get(codec, {})
            pc = replace(cfg.proxy, codec=codec, rate_scale_intra=scales.get("intra", cfg.proxy.rate_scale_intra), rate_scale_inter=scales.get("inter", cfg.proxy.rate_scale_inter))
            self.proxies[codec] = CodecProxy(pc)
        self.objective = None
        if cfg.objective == "bdrate":
            self.objective = BDRateObjective(KappaTable.load(cfg.kappa_table), cfg.guards).to(self.device)
            self.losses = None
        else:
            self.losses = Losses(cfg.loss).to(self.device)

        self.rate_cal = FrameTypeCalibration({c: {"intra": p.config.rate_scale_intra, "inter": p.config.rate_scale_inter} for c, p in self.proxies.items()})
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
        self.step = 0
        self.sources = []
        if bank is None:
            bank, self.sources = build_bank(cfg.train_paths(), cfg.bank, cache=Path(cfg.out_dir) / "cache")
        self.bank = torch.from_numpy(bank)
        self.history = []

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": {"config": asdict(self.cfg.net), "state_dict": self.net.state_dict(), "extra": {}},
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "step": self.step,
            "rng": {"gen": self.gen.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()},
            "config": self.cfg.to_dict(),
            "history": self.history,
            "rate_cal": self.rate_cal.state(),
            "sources": self.sources,
            "bank_sha": self.bank_sha(),
        }

    def bank_sha(self) -> str:
        return hashlib.sha256(self.bank.numpy().tobytes()).hexdigest()[:16]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        torch.save(self.state(), tmp)
        tmp.replace(path)

    def resume(self, path: Path) -> None:
        if not path.is_file():
            raise ModelError(f"cannot resume: checkpoint {path} not found")
        data = torch.load(path, map_location="cpu", weights_only=False)
        self.net.load_state_dict(data["model"]["state_dict"])
        self.opt.load_state_dict(data["optimizer"])
        self.sched.load_state_dict(data["scheduler"])
        self.step = int(data["step"])
        self.gen.set_state(data["rng"]["gen"])
        torch.set_rng_state(data["rng"]["torch"])
        random.setstate(data["rng"]["python"])
        self.history = data.get("history", [])
        if "rate_cal" in data:
            self.rate_cal.load(data["rate_cal"])
        if data.get("bank_sha") and data["bank_sha"] != self.bank_sha():
            LOG.warning("resuming on a different sequence bank (%s, checkpoint %s): data differ from the run's record", self.bank_sha(), data["bank_sha"])

    def export(self, path: Path, **extra) -> None:
        """Write the small deploy checkpoint (weights + config + provenance)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        net = PreEditorNet(self.cfg.net)
        net.load_state_dict({k: v.detach().cpu() for k, v in self.net.state_dict().items()})
        save_checkpoint(net, path, step=self.step, train_config=self.cfg.to_dict(), sources=self.sources, **extra)

    # -- one step -------------------------------------------------------------------------------
    def train_step(self) -> dict:
        cfg = self.cfg
        self.net.train()
        batch = sample_batch(self.bank, cfg.batch_size, cfg.crop, self.gen, self.device)
        if cfg.grain_prob > 0:
            batch = add_grain(batch, cfg.grain_prob, cfg.grain_sigma, self.gen)
        b, t = batch.shape[:2]
        lo, hi = cfg.qp_range
        qp = (lo + (hi - lo) * torch.rand(b, generator=self.gen)).to(self.device)
        codec = cfg.codecs[int(torch.randint(len(cfg.codecs), (1,), generator=self.gen))]
        n = BLOCK_SIZES[int(torch.randint(len(BLOCK_SIZES), (1,), generator=self.gen))]
        n = n if n in cfg.proxy.block_sizes else cfg.proxy.block_sizes[0]
        proxy = self.proxies[codec]
        edited = self.net(batch.reshape(b * t, *batch.shape[2:]), qp.repeat_interleave(t).unsqueeze(1)).reshape(batch.shape)
        motion = proxy.estimate_motion(batch)
        dec = proxy(edited, qp, block_size=n, motion=motion)
        with torch.no_grad():
            plain = proxy(batch, qp, block_size=n, motion=motion)
        real = cfg.real_codec_every > 0 and (self.step + 1) % cfg.real_codec_every == 0
        if self.objective is not None:
            return self._bdrate_step(batch, edited, dec, plain, qp, codec, n, real)
        rate_value = None
        if real:  # the plain baseline goes through the same real encoder, so the ratios compare like with like
            recon, real_bits = real_codec_forward(edited, dec.recon, qp, codec, cfg.real_codec_preset)
            recon_plain, real_bits_plain = real_codec_forward(batch, plain.recon, qp, codec, cfg.real_codec_preset)
            dec, plain = dec._replace(recon=recon), plain._replace(recon=recon_plain)
            if cfg.real_codec_rate:
                rate_value = float(real_bits.sum() / max(1.0, float(real_bits_plain.sum())))
        terms = self.losses(batch, dec.recon, plain.recon, dec.bits, plain.bits, rate_value=rate_value)
        self.opt.zero_grad(set_to_none=True)
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.step += 1
        return {**terms.logs, "codec": codec, "n": n, "real": real}

    def _bdrate_step(self, batch, edited, dec, plain, qp, codec, n, real) -> dict:
        cfg = self.cfg
        cal = self.rate_cal
        log_r = torch.log(cal.bits(codec, dec.units) + 1.0)
        with torch.no_grad():
            log_r0 = torch.log(cal.bits(codec, plain.units) + 1.0)
        logs = {}
        if real:  # real decoded pixels and real bits forward, the proxy's gradient backward
            pk_e, pk_p = [], []
            recon, bits_e = real_codec_forward(edited, dec.recon, qp, codec, cfg.real_codec_preset, cfg.real_codec_mode, cfg.real_av1_preset, pk_e)
            recon_p, bits_p = real_codec_forward(batch, plain.recon, qp, codec, cfg.real_codec_preset, cfg.real_codec_mode, cfg.real_av1_preset, pk_p)
            dec, plain = dec._replace(recon=recon), plain._replace(recon=recon_p)
            real_lr = torch.log(bits_e.to(log_r.dtype).to(log_r.device) + 1.0)
            real_lr0 = torch.log(bits_p.to(log_r.dtype).to(log_r.device) + 1.0)
            logs.update(proxy_dlnr=float((log_r - log_r0).detach().mean()), real_dlnr=float((real_lr - real_lr0).mean()))
            if cfg.rate_gradient == "directional":
                log_r = directional_log_rate(edited, batch, real_lr, real_lr0)
            else:
                log_r = log_r + (real_lr - log_r).detach()
            log_r0 = real_lr0
            if cfg.frame_type_calibration:
                cal.update(codec, plain.units, pk_p)
                cal.update(codec, dec.units, pk_e)
                a_i, a_p = cal.scales(codec)
                logs.update(a_intra=a_i, a_inter=a_p)
        terms = self.objective(batch, dec.recon, plain.recon, log_r, log_r0, qp, codec)
        self.opt.zero_grad(set_to_none=True)
        terms.total.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.step += 1
        return {**terms.logs, **logs, "grad_norm": float(gnorm), "qp_mean": float(qp.mean()), "codec": codec, "n": n, "real": real}

    def fit(self, on_validate=None, time_budget_s: float = 0.0) -> None:
        """Train to `cfg.steps`, checkpointing into `cfg.out_dir` (last.pt) as it goes.

        With `time_budget_s` > 0, the speed of the first 20 steps sets a smaller `cfg.steps` when
        the run would not fit (the cosine schedule follows the new horizon).
        """
        cfg = self.cfg
        out = Path(cfg.out_dir)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True, mininterval=2.0)
        t0, s0 = time.time(), self.step

        def _term(signum, frame):  # SIGTERM ends the run like Ctrl-C: checkpoint, then stop
            raise KeyboardInterrupt

        old_term = signal.signal(signal.SIGTERM, _term) if threading_main() else None
        try:
            self._loop(bar, on_validate, time_budget_s, t0, s0, out)
        except KeyboardInterrupt:
            LOG.warning("interrupted at step %d: checkpoint written to %s", self.step, out / "last.pt")
            self.save(out / "last.pt")
            raise
        finally:
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            bar.close()
        self.seconds_per_step = (time.time() - t0) / max(1, self.step - s0)

    def _loop(self, bar, on_validate, time_budget_s, t0, s0, out) -> None:
        cfg = self.cfg
        while self.step < cfg.steps:
            logs = self.train_step()
            if self.objective is not None or self.step % 10 == 0 or self.step == cfg.steps:
                logs["s_per_step"] = (time.time() - t0) / max(1, self.step - s0)
                self.history.append({"step": self.step, **{k: v for k, v in logs.items()}})
            bar.set_postfix({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in logs.items() if k in ("loss", "rate", "fid", "uv", "vmaf_neg", "codec", "local_bd_pct", "d_psnr")})
            bar.update(1)
            if time_budget_s > 0 and self.step - s0 == 20:
                per_step = (time.time() - t0) / 20.0
                fit = s0 + 20 + int(max(0.0, time_budget_s - (time.time() - t0)) / per_step)
                if fit < cfg.steps:
                    LOG.warning("time budget %.0f s at %.2f s/step: training %d steps instead of %d", time_budget_s, per_step, fit, cfg.steps)
                    cfg.steps = fit
                    bar.total = fit
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self.save(out / "last.pt")
            if on_validate and cfg.val_every > 0 and self.step % cfg.val_every == 0 and self.step < cfg.steps:
                on_validate(self)


def threading_main() -> bool:
    return threading.current_thread() is threading.main_thread()
