"""Validation with the REAL encoder: a small BD-rate of pre-edited vs plain on held-out clips.

```
 held-out clip ─> NV12 frames ─┬─────────────────────────────> encoder @ QP ladder ─> bits, decoded ─┐
                               └─> pre-editor(qp) ─> uint8 ──> encoder @ QP ladder ─> bits, decoded ─┤
 scored against the ORIGINAL frames with libvmaf (perf.metrics: VMAF, VMAF-NEG, VMAF v1, PSNR, XPSNR)┘
 ─> BD-rate per metric (perf.bdrate, PCHIP), per clip, then averaged over clips
```
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from preedit import codecs
from preedit.color import nv12_pack, nv12_split
from preedit.engines import TorchEngine
from preedit.qp import model_qp
from preedit.quality.bdrate import bd_rate
from preedit.quality.metrics import score
from preedit.quality.y4m import Y4MHeader, write_y4m
from preedit.training.encoders import encode_decode, nv12_to_i420_frame
from preedit.training.proxy_check import _segment

LOG = logging.getLogger(__name__)
BD_METRICS = ("vmaf_neg", "vmaf_v1", "vmaf", "psnr_y", "xpsnr_y")

Editor = Callable[[np.ndarray, float], np.ndarray]  # NV12 uint8 [T, H*3/2, W], qp -> same


def torch_editor(net, device="cpu", chunk: int = 4) -> Editor:
    """Wrap a `PreEditorNet` as NV12 uint8 `[T, H*3/2, W]` + QP → uint8 of the same shape."""
    return TorchEngine(net, device, chunk=chunk, eval_mode=False)


def unsharp_editor(amount: float = 0.8, size: int = 5) -> Editor:
    """FFmpeg-style `unsharp=size:size:amount` on luma (Gaussian-free box approximation is not
    used: this runs FFmpeg's own filter through PyAV's filter graph)."""
    import av  # lazy: av

    def edit(frames: np.ndarray, qp: float) -> np.ndarray:
        t, rows, width = frames.shape
        height = rows * 2 // 3
        graph = av.filter.Graph()
        src = graph.add_buffer(width=width, height=height, format="yuv420p", time_base=__import__("fractions").Fraction(1, 25))
        flt = graph.add("unsharp", f"{size}:{size}:{amount}")
        sink = graph.add("buffersink")
        src.link_to(flt)
        flt.link_to(sink)
        graph.configure()
        out = []
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(nv12_to_i420_frame(f), format="yuv420p")
            vf.pts = i
            graph.push(vf)
            flat = graph.pull().to_ndarray().ravel()
            y = flat[: height * width].reshape(height, width)
            u = flat[height * width : height * width * 5 // 4].reshape(height // 2, width // 2)
            v = flat[height * width * 5 // 4 :].reshape(height // 2, width // 2)
            out.append(nv12_pack(y, u, v))
        return np.stack(out)

    return edit


def _write_y4m(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    h = frames.shape[1] * 2 // 3
    w = frames.shape[2]
    header = Y4MHeader(w, h, fps, 1, (f"W{w}", f"H{h}", f"F{fps}:1", "Ip", "A1:1", "C420jpeg"))
    return write_y4m(path, header, [nv12_split(f) for f in frames])


def score_frames(reference: np.ndarray, decoded: np.ndarray) -> Dict[str, float]:
    """libvmaf/XPSNR scores of decoded vs reference NV12 stacks (swap point: `perf.metrics.score`)."""
    with tempfile.TemporaryDirectory(prefix="preedit-val-") as tmp:
        ref = _write_y4m(Path(tmp) / "ref.y4m", reference)
        dist = _write_y4m(Path(tmp) / "dist.y4m", decoded)
        return dict(score(dist, ref, n_threads=2, expect_frames=len(reference)).metrics)


def rd_curve(frames: np.ndarray, editor: Optional[Editor], encoder: str, qps: Sequence[int], preset: str, qp_for_model: Callable[[int], float]) -> List[dict]:
    """Encode (optionally pre-edited) frames at each QP; score against the original frames."""
    points = []
    for q in qps:
        src = frames if editor is None else editor(frames, qp_for_model(q))
        rt = encode_decode(src, encoder, q, preset=preset)
        point = {"q": q, "kbits": rt.total_bits / 1000.0}
        point.update(score_frames(frames, rt.decoded))
        points.append(point)
    return points


def bd_rates(anchor: List[dict], test: List[dict], metrics: Sequence[str] = BD_METRICS) -> Dict[str, float]:
    """BD-rate (%) of test vs anchor for each metric (PCHIP; NaN when not computable)."""
    out = {}
    for m in metrics:
        r = bd_rate([p["kbits"] for p in anchor], [p[m] for p in anchor], [p["kbits"] for p in test], [p[m] for p in test])
        out[m] = float(r.value)
    return out


def validate(
    editors: Dict[str, Editor],
    clips: Sequence[Path],
    frames: int,
    qps: Sequence[int],
    encoder: str = "libx265",
    preset: str = "medium",
    max_size: int = 0,
) -> dict:
    """Per-clip RD curves and BD-rates of each editor vs the plain encoder, and their means.

    Args:
        editors: name → editor (e.g. {"preedit": torch_editor(net), "unsharp": unsharp_editor()}).
        clips: held-out clip paths.
        frames: frames per clip (from the start).
        qps: encoder QP ladder (x265 QP; libsvtav1 AV1 quantizer 0..63).
        encoder: "libx265" or "libsvtav1".
        preset: encoder preset.
        max_size: centre-crop side limit (0: full frame).
    """
    from preedit.training.data import read_video_nv12  # lazy: pulls torch

    family = codecs.family_of(encoder)
    to_model_qp = lambda q: model_qp(family, q, "qp")  # noqa: E731
    report: dict = {"encoder": encoder, "preset": preset, "qps": list(qps), "frames": frames, "clips": {}, "mean_bd_rate": {}}
    for clip in clips:
        seq = np.stack(read_video_nv12(clip, frames))
        if max_size:
            seq = _segment(clip, frames, max_size)
        entry = {"plain": rd_curve(seq, None, encoder, qps, preset, to_model_qp)}
        for name, ed in editors.items():
            entry[name] = rd_curve(seq, ed, encoder, qps, preset, to_model_qp)
            entry[f"bd_{name}"] = bd_rates(entry["plain"], entry[name])
        report["clips"][clip.name] = entry
    for name in editors:
        report["mean_bd_rate"][name] = {
            m: float(np.nanmean([report["clips"][c][f"bd_{name}"][m] for c in report["clips"]])) for m in BD_METRICS
        }
    return report


def format_report(report: dict) -> str:
    """Markdown table of BD-rates (per clip and mean) for each editor."""
    lines = [f"Encoder {report['encoder']} ({report['preset']}), QPs {report['qps']}, {report['frames']} frames per clip; BD-rate % vs plain (negative = fewer bits at equal quality)", ""]
    editors = list(report["mean_bd_rate"])
    lines.append("| clip | editor | " + " | ".join(BD_METRICS) + " |")
    lines.append("|---|---|" + "---|" * len(BD_METRICS))
    for clip, entry in report["clips"].items():
        for ed in editors:
            vals = entry[f"bd_{ed}"]
            lines.append(f"| {clip} | {ed} | " + " | ".join("n/a" if math.isnan(vals[m]) else f"{vals[m]:+.2f}" for m in BD_METRICS) + " |")
    for ed in editors:
        vals = report["mean_bd_rate"][ed]
        lines.append(f"| **mean** | {ed} | " + " | ".join("n/a" if math.isnan(vals[m]) else f"**{vals[m]:+.2f}**" for m in BD_METRICS) + " |")
    return "\n".join(lines)
