"""`preedit qp-calibrate`: fit the AV1 quantizer → model-QP tables (`preedit/av1_quality_map.json`).

The model's QP input is a quality level on libx265's scale: "as coarse as libx265 medium at this
fixed QP". For x265 the encoder value is the model QP. SVT-AV1 at the quantizer of equal step
size is much finer (at equal step, on the training clips, its plain encode matches x265 about
8 QP lower), so equal step would ask the model for the edit of a much coarser codec. This tool
encodes training clips (never the held-out ones) plainly with libx265 medium over a fixed-QP
ladder and with SVT-AV1 per rate-control mode, and for each AV1 quantizer finds the x265 QP of
equal PSNR-Y (interpolated on each clip's x265 curve, median over clips):

```
 training clips ─┬─> libx265 medium, QP 10..51 ─> PSNR-Y(QP) curve per clip
                 └─> SVT-AV1 (crf preset 8 | qp preset 12), q ─> PSNR-Y ─> x265 QP of equal PSNR-Y
 median over clips, per (mode, q) ─> av1_quality_map.json, read by `preedit.qp`
```

Only plain (unedited) encodes are used, so the fit is a property of the codecs, not of a model.

`--reported` fits the other table the model-QP scale needs, `preedit/reported_qp_map.json`: for a
rate-controlled encode (`preedit ladder`, `preedit run --bitrate`) the QP hint follows the QP the
encoder reports with each packet (AV_PKT_DATA_QUALITY_STATS), read as "the CRF whose encode
reports this mean QP":

```
 training clips ─> libx265 / libx264 medium, SVT-AV1 preset 8, each over a CRF ladder
               ─> mean reported frame QP per (clip, CRF) ─> least squares crf = a + b·reported, per family
```
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from preedit.errors import InputError, UsageError
from preedit.paths import clips_dir
from preedit import codecs
from preedit.qp import AV1_QUALITY_MAP_PATH, REPORTED_QP_MAP_PATH, av1_q_to_hevc_qp
from preedit.training.cli import DEFAULT_CONFIG
from preedit.training.encoders import encode_decode, psnr_y

LOG = logging.getLogger(__name__)
DEFAULT_CLIPS = (
    "face-webcam-1080x720.mp4", "bottle-detection.mp4", "asl-night.mkv", "stream-of-water.webm", "edge-rotate-buck-bunny.mp4",
    "asl-book.mkv", "edge-sar_2x1.mp4", "edge-cursed-vfr.mp4", "asl-help.mkv", "asl-want.mkv",
)  # fmt: skip
X265_QPS = tuple(range(10, 52, 3)) + (51,)
AV1_QS = (12, 20, 28, 36, 44, 51, 57, 63)
REPORTED_CRFS = {"hevc": (22, 27, 32, 37, 42), "h264": (22, 27, 32, 37, 42), "av1": (36, 43, 50, 56, 62)}
MODES = {"crf": "8", "qp": "12"}  # rate-control mode → SVT-AV1 preset (eval/client use CRF p8; training's real forward QP p12)


def setup_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", nargs="+", default=list(DEFAULT_CLIPS), help="training clip names (shared clips folder) or paths")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (from the start)")
    parser.add_argument("--height", type=int, default=360, help="clips are scaled to this height")
    parser.add_argument("--out", default=None,
                        help="JSON written (default: the packaged map read by preedit.qp: av1_quality_map.json, "
                             "or reported_qp_map.json with --reported)")
    parser.add_argument("--reported", action="store_true",
                        help="fit the reported-QP → CRF map (rate-controlled encodes' QP hint) instead of the AV1 map")
    parser.add_argument("--dry-run", action="store_true", help="print the table, write nothing")


def mean_reported_qp(seq: np.ndarray, family: str, crf: float, fps: int = 25) -> float:
    """Mean frame QP the encoder reports (`codecs.reported_qp`) over a CRF encode of NV12 `seq`."""
    import av  # lazy: av

    ctx = av.CodecContext.create(codecs.ENCODER_OF[family], "w")
    ctx.width, ctx.height, ctx.pix_fmt = seq.shape[2], seq.shape[1] * 2 // 3, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, fps), fps
    ctx.options = codecs.pyav_options(family, crf=crf)
    ctx.open()
    qps: List[float] = []
    for i, nv12 in enumerate(seq):
        frame = av.VideoFrame.from_ndarray(nv12, format="nv12").reformat(format="yuv420p")
        frame.pts = i
        qps += [codecs.reported_qp(p) for p in ctx.encode(frame)]
    qps += [codecs.reported_qp(p) for p in ctx.encode(None)]
    if not qps or any(q is None for q in qps):
        raise InputError(f"{codecs.ENCODER_OF[family]} reported no frame QP (AV_PKT_DATA_QUALITY_STATS)")
    return float(np.mean(qps))


def calibrate_reported(clips: Sequence[Path], frames: int, height: int) -> dict:
    """Least-squares `crf = a + b * mean reported QP` per family over clips × the CRF ladder."""
    points: Dict[str, List[List[float]]] = {f: [] for f in REPORTED_CRFS}
    for path in clips:
        t0 = time.time()
        seq = _load(path, frames, height)
        for family, crfs in REPORTED_CRFS.items():
            points[family] += [[crf, round(mean_reported_qp(seq, family, crf), 3), path.name] for crf in crfs]
        LOG.info("%s: %.0f s", path.name, time.time() - t0)
    fit = {}
    for family, pts in points.items():
        crf = np.array([p[0] for p in pts], dtype=np.float64)
        rep = np.array([p[1] for p in pts], dtype=np.float64)
        b, a = np.polyfit(rep, crf, 1)
        resid = crf - (a + b * rep)
        fit[family] = [round(float(a), 3), round(float(b), 4)]
        LOG.info("%s: crf = %.2f + %.3f * reported (rms %.2f)", family, a, b, float(np.sqrt(np.mean(resid ** 2))))
    return {
        "metric": "mean frame QP reported by the encoder (AV_PKT_DATA_QUALITY_STATS) of a plain CRF encode",
        "encoders": {f: f"{codecs.ENCODER_OF[f]} preset {codecs.DEFAULT_PRESET[f]}, CRF {','.join(map(str, c))}"
                     for f, c in REPORTED_CRFS.items()},
        "clips": [p.name for p in clips], "frames": frames, "height": height,
        "fit": fit, "fit_form": "crf = a + b * reported", "points": points,
    }  # fmt: skip


def _load(path: Path, frames: int, height: int) -> np.ndarray:
    import av  # lazy: av

    try:
        with av.open(str(path)) as box:
            out = []
            for f in box.decode(video=0):
                w = int(round(f.width * height / f.height / 2)) * 2
                out.append(f.reformat(width=w, height=height, format="nv12").to_ndarray())
                if len(out) == frames:
                    break
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if len(out) < frames:
        raise InputError(f"{path.name} has {len(out)} frames, need {frames}")
    return np.stack(out)


def equal_quality_qp(x265_qps: Sequence[float], x265_psnr: Sequence[float], target_psnr: float) -> float:
    """x265 QP whose PSNR-Y equals `target_psnr` on a clip's curve (linear extrapolation past its ends)."""
    q = np.asarray(x265_qps, dtype=np.float64)
    p = np.asarray(x265_psnr, dtype=np.float64)
    order = np.argsort(p)
    p, q = p[order], q[order]
    if target_psnr < p[0]:
        return float(q[0] + (target_psnr - p[0]) * (q[1] - q[0]) / (p[1] - p[0]))
    if target_psnr > p[-1]:
        return float(q[-1] + (target_psnr - p[-1]) * (q[-1] - q[-2]) / (p[-1] - p[-2]))
    return float(np.interp(target_psnr, p, q))


def calibrate(clips: Sequence[Path], frames: int, height: int) -> dict:
    per: Dict[str, Dict[int, List[float]]] = {m: {q: [] for q in AV1_QS} for m in MODES}
    for path in clips:
        t0 = time.time()
        seq = _load(path, frames, height)
        ps = [psnr_y(seq, encode_decode(seq, "libx265", qp, preset="medium").decoded) for qp in X265_QPS]
        for mode, preset in MODES.items():
            for q in AV1_QS:
                target = psnr_y(seq, encode_decode(seq, "libsvtav1", q, preset=preset, mode=mode).decoded)
                per[mode][q].append(equal_quality_qp(X265_QPS, ps, target))
        LOG.info("%s: %.0f s", path.name, time.time() - t0)
    table = {mode: [[q, round(float(np.median(v)), 2)] for q, v in sorted(per[mode].items())] for mode in MODES}
    spread = {mode: {str(q): [round(x, 1) for x in v] for q, v in sorted(per[mode].items())} for mode in MODES}
    return {
        "metric": "PSNR-Y of the plain encode; x265 QP of equal PSNR-Y, median over clips",
        "x265": "libx265 preset medium, fixed QP " + ",".join(str(q) for q in X265_QPS),
        "modes": {m: f"SVT-AV1 preset {p}, {'--crf' if m == 'crf' else 'fixed --qp (rc=0, aq-mode=0)'}" for m, p in MODES.items()},
        "clips": [p.name for p in clips], "frames": frames, "height": height,
        "table": table, "per_clip": spread,
    }  # fmt: skip


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="preedit qp-calibrate", description=__doc__.split("\n")[0])
    setup_args(parser)
    args = parser.parse_args(argv)

    if args.frames < 1 or args.height < 64 or args.height % 2:
        raise UsageError("--frames must be >= 1 and --height an even number >= 64")
    held = _heldout()
    clips = [Path(c) if Path(c).is_file() else clips_dir() / c for c in args.clips]
    leaked = [c.name for c in clips if c.name in held]
    if leaked:
        raise UsageError(f"held-out clips must not calibrate the model's QP scale: {leaked}")
    missing = [str(c) for c in clips if not c.is_file()]
    if missing:
        raise InputError(f"clips not found: {missing}")
    if args.reported:
        report = calibrate_reported(clips, args.frames, args.height)
        print(f"qp-calibrate --reported: {len(clips)} clips, {args.frames} frames at {args.height}p")
        for family, (a, b) in report["fit"].items():
            print(f"{family:>5}: crf = {a:6.2f} + {b:.3f} x reported QP")
        out = Path(args.out or REPORTED_QP_MAP_PATH)
        if not args.dry_run:
            out.write_text(json.dumps(report, indent=1) + "\n")
            print(f"written to {out}")
        return 0
    report = calibrate(clips, args.frames, args.height)
    print(f"qp-calibrate: {len(clips)} clips, {args.frames} frames at {args.height}p; x265 QP of equal PSNR-Y (median)")
    print(f"{'AV1 q':>6} " + " ".join(f"{m:>8}" for m in MODES) + "   equal-step QP")

    for i, q in enumerate(AV1_QS):
        print(f"{q:>6} " + " ".join(f"{report['table'][m][i][1]:>8.1f}" for m in MODES) + f"   {av1_q_to_hevc_qp(q):>8.1f}")
    if not args.dry_run:
        out = Path(args.out or AV1_QUALITY_MAP_PATH)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"written to {out}")
    return 0


def _heldout() -> set:
    import yaml  # lazy: yaml


    return set(yaml.safe_load(Path(DEFAULT_CONFIG).read_text()).get("heldout", []))
