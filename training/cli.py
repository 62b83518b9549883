"""`preedit train`: train the pre-editor through the differentiable codec proxy.

```
 --config YAML (training/default/config.yaml) ─> TrainConfig ─> Trainer.fit ─> out_dir/last.pt
   ─> out_dir/model.pt (deploy checkpoint) ─> real-encoder validation on the held-out clips
   ─> out_dir/validation.json + validation.md
```
Precedence: command-line flags > YAML file > defaults.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import time
from pathlib import Path
from typing import List

from preedit.errors import ModelError, UsageError

LOG = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).resolve().parent / "default" / "config.yaml"


def setup_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML training config (default: the shipped default; with --resume CKPT: the checkpoint's own config)")
    parser.add_argument("--out", default=None, help="output folder (overrides out_dir)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (overrides the config)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per step")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="training device (auto: CUDA when present)")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed")
    parser.add_argument("--source", action="append", default=[], help="extra training video file or image folder (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. --set loss.rate_weight=2.0 (repeatable)")
    parser.add_argument("--init", default=None, metavar="CKPT", help="warm start: initial weights from a checkpoint (fresh optimiser and schedule)")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT", help="continue a run (model, optimiser, schedule, step, RNG, rate calibration) from CKPT, or from OUT/last.pt when no CKPT is given; without --config the checkpoint's config is used")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--fit-kappa", default=None, metavar="JSON", help="only fit the kappa(QP) table (plain real encodes of training sequences, evaluation settings) into JSON, then exit")
    parser.add_argument("--calibrate-alpha", default=None, metavar="CKPT", help="only calibrate the per-QP edit strength alpha(QP) of CKPT on the dev clips (real encoder), write --alpha-out JSON and JSON's .pt twin, then exit")
    parser.add_argument("--alpha-out", default="runs/alpha/alpha.json", metavar="JSON", help="output of --calibrate-alpha")
    parser.add_argument("--alphas", type=float, nargs="+", default=None, help="edit strengths tried by --calibrate-alpha (first must be 0)")
    parser.add_argument("--kappa-seqs", type=int, default=24, help="training sequences used by --fit-kappa")
    parser.add_argument("--bank", default=None, help="use a pre-extracted sequence bank (.npz with 'bank') instead of decoding clips")
    parser.add_argument("--write-bank", default=None, metavar="NPZ", help="only decode and cut the training sequences into this .npz (for hosts without PyAV), then exit")
    parser.add_argument("--no-validate", action="store_true", help="skip the final real-encoder validation")
    parser.add_argument("--val-frames", type=int, default=None, help="frames per held-out clip in validation")
    parser.add_argument("--time-budget-min", type=float, default=0.0, help="shorten the run (measured after 20 steps) to fit this many minutes")
    parser.add_argument("--val-max-size", type=int, default=0, help="centre-crop side limit in validation (0: full frame)")


def build_config(args) -> "TrainConfig":
    from preedit.training.config import TrainConfig, load_yaml  # lazy: pulls torch

    data = load_yaml(args.config) if args.config else {}
    resume = getattr(args, "resume", None)
    if args.config is None and resume:
        data = _checkpoint_config(Path(resume))
    elif args.config is None:
        data = load_yaml(str(DEFAULT_CONFIG))
    for key, value in (("out_dir", args.out), ("steps", args.steps), ("batch_size", args.batch_size), ("device", args.device), ("seed", args.seed), ("val_frames", args.val_frames)):
        if value is not None:
            data[key] = value
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set needs KEY=VALUE, got {item!r}")
        import yaml  # lazy: yaml

        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    if args.source:
        data["extra_sources"] = list(data.get("extra_sources", [])) + list(args.source)
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad training config: {exc}") from None


def _checkpoint_config(path: Path) -> dict:
    """The training config stored in a trainer checkpoint (`Trainer.state`)."""
    from preedit.network import read_checkpoint_file  # lazy: pulls torch

    try:
        data = read_checkpoint_file(path)
    except ModelError as exc:
        raise UsageError(f"cannot resume: {exc}") from None
    if "config" not in data or "optimizer" not in data:
        raise UsageError(f"{path} is not a trainer checkpoint (no optimiser state); use --init for weights only")
    return dict(data["config"])


def write_run_record(trainer, out: Path, argv: List[str]) -> None:
    """config.json + data_list.json beside the checkpoints: what the run depends on."""
    from preedit.training.data import source_group  # lazy: pulls torch

    cfg = trainer.cfg
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    groups = collections.Counter(source_group(Path(p), cfg.bank.group_patterns) for p in cfg.train_paths() if Path(p).name in set(trainer.sources))
    record = {
        "seed": cfg.seed,
        "bank_shape": list(trainer.bank.shape),
        "bank_sha": trainer.bank_sha(),
        "sources": trainer.sources,
        "groups": dict(groups),
        "dev_sources": cfg.dev_sources,
        "heldout": cfg.heldout,
        "argv": argv,
    }
    (out / "data_list.json").write_text(json.dumps(record, indent=1))


def run_validation(trainer, frames: int, max_size: int) -> dict:
    from preedit.training.validate import format_report, torch_editor, validate  # lazy: pulls numpy

    cfg = trainer.cfg
    clips = [p for p in cfg.heldout_paths() if p.is_file()]
    if not clips:
        LOG.warning("no held-out clips found; validation skipped")
        return {}
    trainer.net.eval()
    t0 = time.time()
    report = validate({"preedit": torch_editor(trainer.net, trainer.device)}, clips, frames, cfg.val_qps, cfg.val_codec, max_size=max_size)
    report["step"] = trainer.step
    report["seconds"] = round(time.time() - t0, 1)
    out = Path(cfg.out_dir)
    (out / f"validation-{trainer.step}.json").write_text(json.dumps(report, indent=1))
    (out / f"validation-{trainer.step}.md").write_text(format_report(report) + "\n")
    print(format_report(report))
    return report


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="preedit train", description=__doc__.split("\n")[0])
    setup_args(parser)
    args = parser.parse_args(argv)
    import numpy as np  # lazy: numpy

    from preedit.training.trainer import Trainer  # lazy: pulls torch

    cfg = build_config(args)
    if args.threads > 0:
        import torch  # lazy: torch

        torch.set_num_threads(args.threads)
    if args.write_bank:
        from preedit.training.data import build_bank  # lazy: pulls torch

        bank, used = build_bank(cfg.train_paths(), cfg.bank)
        np.savez_compressed(args.write_bank, bank=bank, names=json.dumps(used))
        print(f"bank {tuple(bank.shape)} from {len(used)} sources written to {args.write_bank}")
        return 0
    if args.calibrate_alpha:
        from preedit.training.alpha import main_alpha  # lazy: pulls numpy

        from preedit.training.alpha import ALPHAS  # lazy: pulls numpy

        return main_alpha(cfg, args.calibrate_alpha, args.alpha_out, alphas=tuple(args.alphas or ALPHAS))
    if args.fit_kappa:
        from preedit.training.data import build_bank  # lazy: pulls torch
        from preedit.training.kappa import FIT_QPS, fit_kappa  # lazy: pulls numpy

        bank, used = build_bank(cfg.train_paths(), cfg.bank, cache=Path(cfg.out_dir) / "cache")
        t0 = time.time()
        table = fit_kappa(bank, FIT_QPS, cfg.codecs, max_seqs=args.kappa_seqs, seed=cfg.seed)
        table["note"] = (f"kappa = -d ln R / d VMAF-NEG (vmaf-torch, motion off) of the plain encode, median over {min(args.kappa_seqs, len(bank))} "
                         f"training sequences ({cfg.bank.seq_len} frames, {cfg.bank.window}px) of {len(used)} sources; hevc: libx265 medium CRF = model QP; "
                         f"av1: SVT-AV1 preset 8 at the CRF of equal quality; {time.time() - t0:.0f} s")
        table["sources"] = used
        Path(args.fit_kappa).parent.mkdir(parents=True, exist_ok=True)
        Path(args.fit_kappa).write_text(json.dumps(table, indent=1) + "\n")
        for fam in cfg.codecs:
            print(fam, " ".join(f"QP{q:.0f}:{k:.4f}" for q, k in zip(table[fam]["qp"], table[fam]["kappa"])))
        print(f"kappa table written to {args.fit_kappa}")
        return 0
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bank = None
    if args.bank:
        data = np.load(args.bank)
        bank = data["bank"]
    trainer = Trainer(cfg, bank=bank)
    if args.bank and "names" in data:
        trainer.sources = json.loads(str(data["names"]))
    if args.init:
        from preedit.network import load_checkpoint  # lazy: pulls torch

        init_net, _ = load_checkpoint(args.init)
        trainer.net.load_state_dict(init_net.state_dict())
        print(f"initial weights from {args.init}")
    if args.resume is not None:
        src = Path(args.resume) if args.resume else out / "last.pt"
        trainer.resume(src)
        print(f"resumed from {src} at step {trainer.step}")
    write_run_record(trainer, out, argv)
    from preedit.network import macs_per_frame  # lazy: pulls torch

    gflop = 2 * macs_per_frame(type(trainer.net)(cfg.net).eval()) / 1e9
    print(f"network {cfg.net}: {sum(p.numel() for p in trainer.net.parameters())} parameters, {gflop:.2f} GFLOP per 1080p frame")
    print(f"training on {trainer.device}: {len(trainer.bank)} sequences from {len(trainer.sources)} sources, {cfg.steps} steps")
    val_frames = cfg.val_frames
    trainer.fit(on_validate=lambda tr: run_validation(tr, val_frames, args.val_max_size), time_budget_s=60.0 * args.time_budget_min)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    trainer.export(out / "model.pt", seconds_per_step=round(trainer.seconds_per_step, 3), device=str(trainer.device))
    (out / "history.json").write_text(json.dumps(trainer.history, indent=1))
    print(f"model written to {out / 'model.pt'} ({trainer.seconds_per_step:.2f} s/step on {trainer.device})")
    if not args.no_validate and cfg.val_every >= 0:
        run_validation(trainer, val_frames, args.val_max_size)
    return 0
