"""Quality cost of the int8 model vs the float model, through the evaluation harness (final encodes).

```
 held-out clips ─> reference.y4m ─┬─ float pre-edit (ORT) ─┐
                                  └─ int8 pre-edit (ORT) ──┴─> libx265 ladder ─> VMAF-NEG, PSNR vs reference
 per clip: BD-rate (int8 vs float) and BD-VMAF-NEG (int8 vs float at equal bitrate)   [perf/rd/eval, preedit/quality/bdrate]
```
Run: `preedit int8 quality [--checkpoint model.pt] [--frames 12]`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from preedit.engines import OrtEngine
from preedit.export.int8.check import load_net
from preedit.export.int8.quantize import QuantScheme
from preedit.export.int8.write import export_deterministic, load_int_model
from preedit.export.onnx_export import export_onnx_bytes
from preedit.paths import cache_dir, clips_dir
from preedit.perf.rd.eval import EvalConfig, run_eval
from preedit.quality.bdrate import bd_quality, bd_rate
from preedit.splits import HELDOUT_CLIPS


def curves(points: List[Dict], variant: str = "preedit") -> Dict[str, Dict[str, List[float]]]:
    """clip → {rate_kbps, vmaf_neg, psnr_yuv, value} sorted by rate, for one variant."""
    out: Dict[str, Dict[str, List[float]]] = {}
    for p in sorted((p for p in points if p["variant"] == variant), key=lambda p: p["rate_kbps"]):
        c = out.setdefault(p["clip"], {"rate_kbps": [], "vmaf_neg": [], "psnr_yuv": [], "value": []})
        for k in c:
            c[k].append(float(p[k]))
    return out


def compare(float_points: List[Dict], int_points: List[Dict]) -> List[Dict]:
    """Per clip: BD-rate and BD-quality of int8 vs float (the float curve is the anchor)."""
    fc, ic = curves(float_points), curves(int_points)
    rows = []
    for clip in fc:
        if clip not in ic:
            continue
        a, b = fc[clip], ic[clip]
        same_crf = [ib - fb for fb, ib in zip(a["vmaf_neg"], b["vmaf_neg"])]
        rows.append({
            "clip": clip,
            "bd_rate_vmaf_neg_pct": bd_rate(a["rate_kbps"], a["vmaf_neg"], b["rate_kbps"], b["vmaf_neg"]).value,
            "bd_rate_psnr_yuv_pct": bd_rate(a["rate_kbps"], a["psnr_yuv"], b["rate_kbps"], b["psnr_yuv"]).value,
            "bd_vmaf_neg": bd_quality(a["rate_kbps"], a["vmaf_neg"], b["rate_kbps"], b["vmaf_neg"]).value,
            "max_abs_vmaf_neg_same_crf": max(abs(v) for v in same_crf),
            "float_vmaf_neg": statistics.mean(a["vmaf_neg"]), "int8_vmaf_neg": statistics.mean(b["vmaf_neg"]),
            "float_kbps": statistics.mean(a["rate_kbps"]), "int8_kbps": statistics.mean(b["rate_kbps"]),
        })
    return rows


def markdown(rows: List[Dict], meta: Dict) -> str:
    lines = [f"Network: {meta['network']}; int8 scheme {meta['scheme']}; libx265 ladder {meta['ladder']} "
             f"({meta['frames']} frames per clip, <= {meta['max_height']} px high). Anchor = float model.", "",
             "| clip | BD-rate VMAF-NEG (%) | BD-rate PSNR-YUV (%) | BD-VMAF-NEG at equal rate | max abs dVMAF-NEG same CRF | mean VMAF-NEG float / int8 | mean kbps float / int8 |",
             "|---|---|---|---|---|---|---|"]

    def f(v: float, d: int = 3) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.{d}f}"

    for r in rows:
        lines.append(f"| {r['clip']} | {f(r['bd_rate_vmaf_neg_pct'], 2)} | {f(r['bd_rate_psnr_yuv_pct'], 2)} | "
                     f"{f(r['bd_vmaf_neg'])} | {r['max_abs_vmaf_neg_same_crf']:.3f} | "
                     f"{r['float_vmaf_neg']:.2f} / {r['int8_vmaf_neg']:.2f} | {r['float_kbps']:.1f} / {r['int8_kbps']:.1f} |")
    finite = [r for r in rows if not math.isnan(r["bd_vmaf_neg"])]
    if finite:
        lines.append(f"| **mean** | {f(statistics.mean(r['bd_rate_vmaf_neg_pct'] for r in finite), 2)} | "
                     f"{f(statistics.mean(r['bd_rate_psnr_yuv_pct'] for r in finite), 2)} | "
                     f"{f(statistics.mean(r['bd_vmaf_neg'] for r in finite))} | "
                     f"{max(r['max_abs_vmaf_neg_same_crf'] for r in rows):.3f} | | |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    """Evaluate float vs int8 final encodes on the held-out clips; print the Markdown table."""
    parser = argparse.ArgumentParser(prog="preedit int8 quality", description=main.__doc__)
    parser.add_argument("--checkpoint", type=Path, default=None, help="float checkpoint (default: perturbed net)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--max-height", type=int, default=360)
    parser.add_argument("--ladder", default="22,27,32,37", help="libx265 CRF values")
    parser.add_argument("--clips", default=",".join(HELDOUT_CLIPS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--scheme", default=None, help="observer/granularity/symmetry/nN (default: the shipped scheme)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    net, source = load_net(args.checkpoint)
    ladder = [float(v) for v in args.ladder.split(",")]
    with tempfile.TemporaryDirectory(prefix="preedit_detq_") as tmp:
        scheme = QuantScheme.parse(args.scheme) if args.scheme else None
        model_dir = export_deterministic(net, Path(tmp), scheme=scheme)
        model = load_int_model(model_dir)
        int_editor = OrtEngine((model_dir / "1" / "model.onnx").read_bytes(), threads=1, description="int8 " + json.dumps(model.scheme))
        float_editor = OrtEngine(export_onnx_bytes(net), threads=1, description="float " + source)
        results = {}
        for kind, editor in (("float", float_editor), ("int8", int_editor)):
            cfg = EvalConfig(clips=[clips_dir() / c for c in args.clips.split(",")], out_dir=Path(tmp) / kind,
                             codecs=("libx265",), variants=("source", "preedit"), ladders={"libx265": ladder},
                             frames=args.frames, max_height=args.max_height, jobs=args.jobs,
                             cache_dir=cache_dir() / "determinism_eval", plots=False, crops=False)
            results[kind] = run_eval(cfg, editor, progress=False)
    rows = compare(results["float"].points, results["int8"].points)
    meta = {"network": source, "scheme": model.scheme, "ladder": ladder, "frames": args.frames,
            "max_height": args.max_height, "tools": results["int8"].tool_versions}
    print(markdown(rows, meta))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
