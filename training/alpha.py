"""Per-QP edit strength α(QP), calibrated on the dev set with the real encoder.

```
 dev clips (config.dev_sources; first F frames, scaled to ≤ H lines)
   ─> edit e = net(x, QP) − x ;  x_α = round(x + α·e)   for α in ALPHAS
   ─> real encode at the evaluation settings (libx265 medium CRF = QP; SVT-AV1 p8 CRF of equal quality)
   ─> per clip: local BD = ln(R_α/R_0) + κ(QP)·(Q_0 − Q_α) + PSNR-Y guard   (training/objective.py terms)
   ─> α(QP) = argmin over α of the mean over clips and codecs   ─> table (JSON) + NetConfig.alpha_*
```
Q is VMAF-NEG of vmaf-torch (motion off), as in training. Only dev clips are used: the held-out
clips never take part in a choice.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from preedit.color import nv12_split
from preedit.errors import UsageError
from preedit.training.encoders import encode_decode, psnr_y
from preedit.training.kappa import KappaTable
from preedit.training.qp_calibration import _load

LOG = logging.getLogger(__name__)
ALPHAS = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5)
QPS = (22, 27, 32, 37, 42)


def calibrate_alpha(net, clips: Sequence[Path], kappa, guards, families: Sequence[str] = ("hevc", "av1"), qps: Sequence[int] = QPS,
                    alphas: Sequence[float] = ALPHAS, frames: int = 8, height: int = 360) -> dict:
    """Score every (QP, α) on the dev clips; returns {"qp", "alpha", "table": rows, "mean": [[...]]}."""
    import torch  # lazy: torch
    from vmaf_torch import VMAF  # lazy: vmaf_torch

    from preedit.training.objective import real_encoder_settings  # lazy: pulls torch

    if not alphas or alphas[0] != 0.0:
        raise ValueError("alphas must start with 0.0 (the plain encode every other alpha is compared with)")
    vmaf = VMAF(temporal_pooling=False, enable_motion=False, clip_score=False, NEG=True)
    net.eval()
    rows: List[Dict] = []
    for path in clips:
        src = _load(Path(path), frames, height)
        ref_y = torch.from_numpy(nv12_split(src)[0].astype(np.float32)).unsqueeze(1)
        for qp in qps:
            with torch.no_grad():
                edit = net(torch.from_numpy(src).float(), torch.full((len(src), 1), float(qp))) - torch.from_numpy(src).float()
            for fam in families:
                enc, value, preset = real_encoder_settings(fam, float(qp))
                base = None
                for a in alphas:
                    x = np.clip(np.rint(src.astype(np.float32) + a * edit.numpy()), 0, 255).astype(np.uint8)
                    rt = encode_decode(x, enc, value, preset=preset, mode="crf")
                    dec_y = torch.from_numpy(nv12_split(rt.decoded)[0].astype(np.float32)).unsqueeze(1)
                    with torch.no_grad():
                        q = float(vmaf(ref_y, dec_y).mean())
                    p = psnr_y(src, rt.decoded)
                    if a == 0.0:
                        base = (rt.total_bits, q, p)
                    r0, q0, p0 = base
                    k = float(kappa(fam, qp))
                    local = math.log(max(rt.total_bits, 1) / max(r0, 1)) + k * (q0 - q)
                    guard = guards.psnr_weight * max(0.0, (p0 - p) - guards.psnr_margin)
                    rows.append({"clip": Path(path).name, "family": fam, "qp": qp, "alpha": a, "bits": rt.total_bits, "neg": round(q, 3),
                                 "psnr_y": round(p, 3), "local_bd": round(local, 5), "score": round(local + guard, 5)})
                LOG.info("alpha: %s %s QP %d done", Path(path).name, fam, qp)
    mean = [[float(np.mean([r["score"] for r in rows if r["qp"] == qp and r["alpha"] == a])) for a in alphas] for qp in qps]
    best = [float(alphas[int(np.argmin(m))]) for m in mean]
    return {"qp": [float(q) for q in qps], "alpha": best, "alphas_tried": list(alphas), "mean_score": mean, "rows": rows,
            "clips": [Path(c).name for c in clips], "frames": frames, "height": height}


def with_alpha(checkpoint: Path, table: dict, out: Path) -> None:
    """Write `checkpoint` again with α(QP) in its NetConfig (deploy checkpoint)."""
    from preedit.network import PreEditorNet, load_checkpoint, save_checkpoint  # lazy: pulls torch

    net, extra = load_checkpoint(checkpoint)
    cfg = replace(net.config, alpha_qps=tuple(table["qp"]), alpha_values=tuple(table["alpha"]))
    new = PreEditorNet(cfg)
    new.load_state_dict(net.state_dict())
    extra = dict(extra)
    extra["alpha_calibration"] = {k: table[k] for k in ("qp", "alpha", "clips", "frames", "height")}
    save_checkpoint(new, out, **extra)
    LOG.info("alpha table %s written into %s (%s)", table["alpha"], out, asdict(cfg))


def main_alpha(cfg, checkpoint: str, out_json: str, frames: int = 8, alphas: Sequence[float] = ALPHAS) -> int:
    from preedit.network import load_checkpoint  # lazy: pulls torch

    net, _ = load_checkpoint(checkpoint)
    clips = [p for p in cfg.dev_paths() if p.is_file()]
    if not clips:
        raise UsageError("no dev clips found (dev_sources in the config)")
    table = calibrate_alpha(net, clips, KappaTable.load(cfg.kappa_table), cfg.guards, cfg.codecs, alphas=alphas, frames=frames)
    table["checkpoint"] = str(checkpoint)
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(out_json).write_text(json.dumps(table, indent=1) + "\n")
    for q, a, m in zip(table["qp"], table["alpha"], table["mean_score"]):
        print(f"QP {q:.0f}: alpha {a}  (mean score per alpha {table['alphas_tried']}: {[round(x, 4) for x in m]})")
    if net.config.arch != "unet":
        print(f"alpha table written to {out_json} (arch {net.config.arch!r} has no alpha input: no checkpoint written)")
        return 0
    model_out = Path(out_json).with_suffix(".pt")
    with_alpha(Path(checkpoint), table, model_out)
    print(f"alpha table written to {out_json}; checkpoint with alpha: {model_out}")
    return 0
