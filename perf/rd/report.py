"""Reports of `preedit eval`: JSON, CSV, Markdown, RD plots and matched-bitrate crops.

```
 EvalResult ─> eval.json (every point, BD rows, tool versions, model hash)
            ─> points.csv, bd.csv
            ─> report.md (BD-rate table: rows clip x codec, one column group per variant)
            ─> rd_<clip>_<metric>.png, crops_<clip>_<codec>.png
```
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from preedit.errors import InputError
from preedit.quality.ffmpeg import ffmpeg_exe, run_command
from preedit.quality.metrics import METRICS

SHORT = {"vmaf": "VMAF", "vmaf_neg": "NEG", "vmaf_v1": "v1", "psnr_y": "PSNR-Y", "psnr_yuv": "PSNR-YUV",
         "ms_ssim": "MS-SSIM", "xpsnr_y": "XPSNR"}  # fmt: skip


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(result, path: Path) -> Path:
    """Write the full result (NaN -> null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(result.to_dict()), indent=1, default=str))
    return path


def write_csv(rows: Sequence[Dict], path: Path) -> Path:
    """Write dict rows as CSV (columns from the first row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        if not rows:
            return path
        w = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    return path


def _fmt(v: Optional[float], digits: int = 1, signed: bool = True) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def bd_table(result, value_key: str = "bd_rate_pchip", digits: int = 1) -> List[str]:
    """Markdown table: rows clip x codec (+ mean and bad-case rows), column groups per variant."""
    variants = [v for v in result.config["variants"] if v != "source"]
    metrics = list(METRICS)
    index = {(r["clip"], r["codec"], r["variant"], r["metric"]): r for r in result.bd}
    head = ["clip", "codec"] + [f"{v} {SHORT[m]}" for v in variants for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for clip in result.clips:
        for codec in result.config["codecs"]:
            cells = [clip.name, codec]
            for v in variants:
                for m in metrics:
                    r = index.get((clip.name, codec, v, m))
                    cells.append(_fmt(r[value_key] if r else None, digits))
            lines.append("| " + " | ".join(cells) + " |")
    mean_key = {"bd_rate_pchip": "mean_bd_rate_pchip", "bd_rate_akima": "mean_bd_rate_akima",
                "bd_quality_pchip": "mean_bd_quality_pchip"}[value_key]  # fmt: skip
    summ = {(s["codec"], s["variant"], s["metric"]): s for s in result.summary}
    for codec in result.config["codecs"]:
        cells = ["**mean of clips**", codec]
        for v in variants:
            for m in metrics:
                s = summ.get((codec, v, m))
                cells.append("**" + _fmt(s[mean_key] if s else None, digits) + "**")
        lines.append("| " + " | ".join(cells) + " |")
    if value_key.startswith("bd_rate"):
        for codec in result.config["codecs"]:
            cells = ["bad cases (BD-rate > 0)", codec]
            for v in variants:
                for m in metrics:
                    s = summ.get((codec, v, m))
                    cells.append(f"{s['bad_cases']}/{s['clips_valid']}" if s else "n/a")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(result) -> str:
    """The Markdown report."""
    cfg = result.config
    model = result.model
    out = ["# Rate-distortion evaluation (`preedit eval`)", ""]
    out.append(f"Command: `{cfg.get('command') or 'library call'}`  ")
    out.append(f"Model: `{model.get('hash') or 'n/a'}` ({model.get('description') or 'none'}; {model.get('source')})  ")
    out.append(f"Frames per clip: {cfg['frames']} (from the start); max height {cfg['max_height']}; "
               f"elapsed {result.elapsed_s:.0f} s  ")  # fmt: skip
    out.append("Tools: " + "; ".join(f"{k} `{v}`" for k, v in result.tool_versions.items()))
    out.append("")
    out.append("BD-rate in percent vs the plain encode of the source (negative = fewer bits at equal "
               "quality), PCHIP (JVET CTC), over the overlapping quality interval, per clip, then the "
               "mean of clips (never pooled curves). Every variant is scored against the original "
               "source frames. VMAF v0.6.1 rewards sharpening; read NEG and v1 first.")  # fmt: skip
    out.append("")
    out += bd_table(result, "bd_rate_pchip")
    out.append("")
    out.append("## BD-rate, Akima interpolation")
    out.append("")
    out += bd_table(result, "bd_rate_akima")
    out.append("")
    out.append("## BD-quality (PCHIP; metric units at equal rate: VMAF points, dB, MS-SSIM)")
    out.append("")
    out += bd_table(result, "bd_quality_pchip", digits=3)
    out.append("")
    out.append("## Clips")
    out.append("")
    out.append("| clip | size | fps | frames scored | source range | bit depth (encoded and scored at) |")
    out.append("|---|---|---|---|---|---|")
    for c in result.clips:
        out.append(f"| {c.name} | {c.width}x{c.height} | {c.fps:.2f} | {c.frames} | {c.color_range} | "
                   f"{getattr(c, 'bit_depth', 8)} |")
    out.append("")
    out.append("## Variants and codecs")
    out.append("")
    for v, d in cfg["variant_descriptions"].items():
        out.append(f"- `{v}`: {d}")
    for c in cfg["codecs"]:
        out.append(f"- `{c}`: preset {cfg['presets'][c]}, CRF/CQ ladder {cfg['ladders'][c]}; "
                   f"tune = {cfg['tune_descriptions'][c]}")  # fmt: skip
    if result.warnings:
        out.append("")
        out.append("## Warnings")
        out.append("")
        out += [f"- {w}" for w in result.warnings[:200]]
        if len(result.warnings) > 200:
            out.append(f"- ... {len(result.warnings) - 200} more in eval.json")
    out.append("")
    return "\n".join(out)


def write_reports(result, out_dir: Path) -> Dict[str, Path]:
    """Write eval.json, points.csv, bd.csv, summary.csv and report.md into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": write_json(result, out_dir / "eval.json"),
        "points": write_csv(result.points, out_dir / "points.csv"),
        "bd": write_csv(result.bd, out_dir / "bd.csv"),
        "summary": write_csv(result.summary, out_dir / "summary.csv"),
    }
    (out_dir / "report.md").write_text(markdown(result))
    paths["markdown"] = out_dir / "report.md"
    return paths


# ---------------------------------------------------------------------------------------------
# Figures


def write_figures(result, out_dir: Path, *, plots: bool = True, crops: bool = True) -> List[Path]:
    """RD plots per clip and metric, and source/plain/pre-edited crops at matched bitrate."""
    import matplotlib  # lazy: matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    if plots:
        for clip in result.clips:
            for metric in METRICS:
                written.append(_rd_plot(result, clip.name, metric, out_dir / f"rd_{clip.name}_{metric}.png"))
    if crops and "preedit" in result.config["variants"]:
        for clip in result.clips:
            for codec in result.config["codecs"]:
                p = _crop_figure(result, clip, codec, out_dir / f"crops_{clip.name}_{codec}.png")
                if p:
                    written.append(p)
    return written


def _rd_plot(result, clip: str, metric: str, path: Path) -> Path:
    import matplotlib.pyplot as plt  # lazy: matplotlib

    codecs = result.config["codecs"]
    fig, axes = plt.subplots(1, len(codecs), figsize=(4.2 * len(codecs), 3.4), squeeze=False)
    for ax, codec in zip(axes[0], codecs):
        for v in result.config["variants"]:
            pts = sorted((p for p in result.points if p["clip"] == clip and p["codec"] == codec
                          and p["variant"] == v), key=lambda p: p["rate_kbps"])  # fmt: skip
            if pts:
                ax.plot([p["rate_kbps"] for p in pts], [p[metric] for p in pts], marker="o", ms=3, label=v,
                        lw=2.0 if v in ("source", "preedit") else 1.0)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("rate (kbps)")
        ax.set_ylabel(METRICS[metric])
        ax.set_title(f"{clip} / {codec}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _decode_frame(bitstream: str, index: int, tmp: Path):
    from preedit.quality.y4m import read_y4m  # lazy: pulls numpy

    out = tmp / f"f{abs(hash((bitstream, index)))}.y4m"
    run_command([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", bitstream,
                 "-vf", f"select=eq(n\\,{index})", "-fps_mode", "passthrough", "-frames:v", "1",
                 "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", "-strict", "-1", str(out)],
                error=InputError, what="decoding a crop frame")  # fmt: skip
    return read_y4m(out)[1][0]


def _to_rgb(planes, matrix: str):
    import numpy as np  # lazy: numpy

    from preedit.color import yuv_to_rgb  # lazy: pulls numpy

    y, u, v = (p.astype(np.float32) for p in planes)
    u = np.repeat(np.repeat(u, 2, axis=0), 2, axis=1)
    v = np.repeat(np.repeat(v, 2, axis=0), 2, axis=1)
    rgb = yuv_to_rgb(y, u, v, matrix=matrix, color_range="limited")
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[0] == 3:
        rgb = np.moveaxis(rgb, 0, -1)
    return np.clip(rgb, 0.0, 1.0)


def _crop_figure(result, clip, codec: str, path: Path) -> Optional[Path]:
    import matplotlib.pyplot as plt  # lazy: matplotlib

    from preedit.quality.y4m import read_y4m  # lazy: pulls numpy

    pts = [p for p in result.points if p["clip"] == clip.name and p["codec"] == codec]
    plain = sorted((p for p in pts if p["variant"] == "source"), key=lambda p: p["rate_kbps"])
    edited = [p for p in pts if p["variant"] == "preedit"]
    if not plain or not edited or not all(Path(p["bitstream"]).is_file() for p in plain + edited):
        return None
    anchor = plain[len(plain) // 2]
    match = min(edited, key=lambda p: abs(math.log(p["rate_kbps"] / anchor["rate_kbps"])))
    index = clip.frames // 2
    src = read_y4m(clip.reference)[1][index]
    with tempfile.TemporaryDirectory(prefix="preedit_crop_") as tmp:
        a = _decode_frame(anchor["bitstream"], index, Path(tmp))
        b = _decode_frame(match["bitstream"], index, Path(tmp))
    # Crop the most detailed window of the source (largest luma variance on a coarse grid).
    h, w = src[0].shape
    ch, cw = min(192, h) // 2 * 2, min(256, w) // 2 * 2
    best, pos = -1.0, (0, 0)
    for y0 in range(0, h - ch + 1, max(2, ch // 4) // 2 * 2):
        for x0 in range(0, w - cw + 1, max(2, cw // 4) // 2 * 2):
            var = float(src[0][y0 : y0 + ch, x0 : x0 + cw].var())
            if var > best:
                best, pos = var, (y0, x0)
    y0, x0 = pos

    def crop(planes):
        yy, uu, vv = planes
        return (yy[y0 : y0 + ch, x0 : x0 + cw], uu[y0 // 2 : (y0 + ch) // 2, x0 // 2 : (x0 + cw) // 2],
                vv[y0 // 2 : (y0 + ch) // 2, x0 // 2 : (x0 + cw) // 2])  # fmt: skip

    matrix = "bt709" if h >= 720 else "bt601"
    panels = [("source", src, None), ("plain", a, anchor), ("pre-edited", b, match)]
    fig, axes = plt.subplots(1, 3, figsize=(3 * cw / 80 + 0.6, ch / 80 + 0.9))
    for ax, (label, planes, p) in zip(axes, panels):
        ax.imshow(_to_rgb(crop(planes), matrix), interpolation="nearest")
        title = label if p is None else f"{label} {p['rate_kbps']:.0f} kbps\nNEG {p['vmaf_neg']:.1f} VMAF {p['vmaf']:.1f}"
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.suptitle(f"{clip.name} / {codec}, frame {index}, crop at ({x0},{y0})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
