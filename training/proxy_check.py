"""`preedit proxy-check`: how well the codec proxy ranks rate and distortion like real encoders.

```
 real clips ─> segments NV12 [T, H*3/2, W] ─┬─> libx265 / libsvtav1 at fixed QP ─> bits, MSE(decoded, source)
                                            └─> CodecProxy (same QP, mean over block sizes) ─> units, MSE
 Spearman ρ(proxy bits, real bits) and ρ(proxy MSE, real MSE) over segments × QPs, per encoder;
 optionally fits the rate scales bits ≈ a_intra·units_intra + a_inter·units_inter (NNLS) and
 writes them as the proxy calibration.
```
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from preedit import codecs
from preedit.color import nv12_pack, nv12_split
from preedit.errors import InputError, UsageError
from preedit.paths import clips_dir
from preedit.qp import av1_model_qp
from preedit.training.encoders import encode_decode, mse_yuv

LOG = logging.getLogger(__name__)
DEFAULT_CLIPS = ("asl-book.mkv", "bottle-detection.mp4", "stream-of-water.webm", "face-webcam-1080x720.mp4", "flower.mp4", "sintel-snowfight.mp4", "friday-filmgrain.mp4", "park_joy_480x270_50fps.y4m")
DEFAULT_QPS = (22, 27, 32, 37, 42)
DEFAULT_CALIBRATION = Path(__file__).resolve().parent / "default" / "calibration.json"


def setup_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", nargs="+", default=list(DEFAULT_CLIPS), help="clip names (in the shared clips folder) or paths")
    parser.add_argument("--qps", nargs="+", type=int, default=list(DEFAULT_QPS), help="HEVC QPs (libsvtav1 uses the AV1 quantizer of equal step)")
    parser.add_argument("--encoders", nargs="+", default=list(codecs.ROUNDTRIP_ENCODERS),
                        help=f"real encoders: {', '.join(codecs.ROUNDTRIP_ENCODERS)}")
    parser.add_argument("--frames", type=int, default=6, help="frames per segment (frame 0 intra)")
    parser.add_argument("--max-size", type=int, default=384, help="centre crop side limit (multiple of 64)")
    parser.add_argument("--preset", default="medium", help="x265 preset (libsvtav1 uses preset 8)")
    parser.add_argument("--json", default="", help="write the samples and correlations to this JSON file")
    parser.add_argument("--write-calibration", nargs="?", const=str(DEFAULT_CALIBRATION), default="", help="fit and write the proxy rate scales (default path: training/default/calibration.json)")


def _segment(path: Path, frames: int, max_size: int) -> np.ndarray:
    from preedit.training.data import read_video_nv12  # lazy: pulls torch

    seq = read_video_nv12(path, frames)
    if len(seq) < frames:
        raise InputError(f"{path.name} has {len(seq)} frames, need {frames}")
    h, w = seq[0].shape[0] * 2 // 3, seq[0].shape[1]
    ch, cw = min(h, max_size) // 64 * 64, min(w, max_size) // 64 * 64
    if ch < 64 or cw < 64:
        raise InputError(f"{path.name} ({w}x{h}) is smaller than 64x64")
    y0, x0 = (h - ch) // 4 * 2, (w - cw) // 4 * 2
    out = []
    for f in seq:
        y, u, v = nv12_split(f)
        out.append(nv12_pack(y[y0 : y0 + ch, x0 : x0 + cw], u[y0 // 2 : (y0 + ch) // 2, x0 // 2 : (x0 + cw) // 2], v[y0 // 2 : (y0 + ch) // 2, x0 // 2 : (x0 + cw) // 2]))
    return np.stack(out)


def proxy_measure(seg: np.ndarray, qp_hevc: float, codec: str) -> Dict[str, float]:
    """Proxy rate units (intra, inter) and MSE of one segment, averaged over the block sizes."""
    import torch  # lazy: torch

    from preedit.training.proxy import BLOCK_SIZES, CodecProxy, ProxyConfig  # lazy: pulls torch

    proxy = CodecProxy(ProxyConfig(codec=codec))
    x = torch.from_numpy(seg).float().unsqueeze(0)
    ui, up, mse = [], [], []
    with torch.no_grad():
        for n in BLOCK_SIZES:
            out = proxy(x, torch.tensor([qp_hevc]), block_size=n)
            ui.append(float(out.units[0, 0]))
            up.append(float(out.units[0, 1:].sum()))
            mse.append(float(((out.recon - x) ** 2).mean()))
    return {"units_intra": float(np.mean(ui)), "units_inter": float(np.mean(up)), "proxy_mse": float(np.mean(mse))}


def fit_rate_scales(samples: Sequence[dict]) -> Dict[str, float]:
    """NNLS fit of real bits ≈ a_intra·units_intra + a_inter·units_inter."""
    from scipy.optimize import nnls  # lazy: scipy

    a = np.array([[s["units_intra"], s["units_inter"]] for s in samples])
    b = np.array([s["real_bits"] for s in samples], dtype=np.float64)
    coef, _ = nnls(a, b)
    coef = np.maximum(coef, 1e-3)
    return {"intra": float(coef[0]), "inter": float(coef[1])}


def _rho(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr  # lazy: scipy

    if len(a) < 3:
        return float("nan")
    return float(spearmanr(a, b).correlation)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def run_check(clips: Sequence[Path], qps: Sequence[int], encoders: Sequence[str], frames: int, max_size: int, preset: str) -> dict:
    """Measure samples and correlations; returns a JSON-able report."""
    from scipy.stats import spearmanr  # lazy: scipy

    from preedit.training.proxy import hevc_qp_to_av1_q  # lazy: pulls torch

    report: dict = {"qps": list(qps), "frames": frames, "clips": [p.name for p in clips], "encoders": {}}
    segs = {p.name: _segment(p, frames, max_size) for p in clips}
    for enc in encoders:
        if enc not in codecs.ROUNDTRIP_ENCODERS:
            raise UsageError(f"unknown encoder {enc!r}; valid: {', '.join(codecs.ROUNDTRIP_ENCODERS)}")
        family = codecs.family_of(enc)
        samples = []
        t0 = time.time()
        for name, seg in segs.items():
            for qp in qps:
                enc_q = qp if family == "hevc" else hevc_qp_to_av1_q(qp)
                proxy_qp = float(qp) if family == "hevc" else av1_model_qp(enc_q, "qp")  # the proxy maps it back to enc_q's step
                rt = encode_decode(seg, enc, enc_q, preset=preset)
                s = {"clip": name, "qp": qp, "encoder_q": enc_q, "real_bits": rt.total_bits, "real_mse": mse_yuv(seg, rt.decoded)}
                s.update(proxy_measure(seg, proxy_qp, family))
                samples.append(s)
        scales = fit_rate_scales(samples)
        for s in samples:
            s["proxy_bits"] = scales["intra"] * s["units_intra"] + scales["inter"] * s["units_inter"]
        rho_rate = spearmanr([s["proxy_bits"] for s in samples], [s["real_bits"] for s in samples]).correlation
        rho_dist = spearmanr([s["proxy_mse"] for s in samples], [s["real_mse"] for s in samples]).correlation
        # Within-QP ranking (content only), the harder question, reported beside.
        per_qp = [_rho([s["proxy_bits"] for s in samples if s["qp"] == q], [s["real_bits"] for s in samples if s["qp"] == q]) for q in qps]
        per_qp_d = [_rho([s["proxy_mse"] for s in samples if s["qp"] == q], [s["real_mse"] for s in samples if s["qp"] == q]) for q in qps]
        report["encoders"][enc] = {
            "spearman_rate": float(rho_rate),
            "spearman_distortion": float(rho_dist),
            "spearman_rate_within_qp_mean": _nanmean(per_qp),
            "spearman_distortion_within_qp_mean": _nanmean(per_qp_d),
            "rate_scales": scales,
            "samples": samples,
            "seconds": round(time.time() - t0, 1),
        }
    return report


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="preedit proxy-check", description=__doc__.split("\n")[0])
    setup_args(parser)
    args = parser.parse_args(argv)

    if len(args.qps) < 4:
        raise UsageError(f"need at least 4 QPs for a rank correlation, got {args.qps}")
    if args.max_size < 64 or args.max_size % 64:
        raise UsageError(f"--max-size must be a multiple of 64, got {args.max_size}")
    base = clips_dir()
    clips = [Path(c) if Path(c).is_file() else base / c for c in args.clips]
    missing = [str(c) for c in clips if not c.is_file()]
    if missing:
        raise InputError(f"clips not found: {missing}")
    report = run_check(clips, args.qps, args.encoders, args.frames, args.max_size, args.preset)
    print(f"proxy-check: {len(clips)} clips x {len(args.qps)} QPs {args.qps}, {args.frames} frames each")
    print(f"{'encoder':<10} {'rho(rate)':>10} {'rho(dist)':>10} {'rho(rate)|QP':>13} {'rho(dist)|QP':>13}  rate scales (bits/unit)")
    ok = True
    for enc, r in report["encoders"].items():
        print(f"{enc:<10} {r['spearman_rate']:>10.3f} {r['spearman_distortion']:>10.3f} {r['spearman_rate_within_qp_mean']:>13.3f} {r['spearman_distortion_within_qp_mean']:>13.3f}  intra {r['rate_scales']['intra']:.3f}, inter {r['rate_scales']['inter']:.3f}")
        ok &= r["spearman_rate"] >= 0.9 and r["spearman_distortion"] >= 0.9
    print("acceptance (rho >= 0.9 for rate and distortion, every encoder):", "PASS" if ok else "FAIL")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.write_calibration:
        cal = {codecs.family_of(e): r["rate_scales"] for e, r in report["encoders"].items()}
        cal["note"] = f"bits per proxy rate unit, fitted by preedit proxy-check on {report['clips']} at QPs {report['qps']}"
        Path(args.write_calibration).write_text(json.dumps(cal, indent=1) + "\n")
        print(f"calibration written to {args.write_calibration}")
    return 0
