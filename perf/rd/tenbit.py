"""10-bit benchmark: pre-edited 10-bit vs plain 10-bit HEVC (and the 8-bit alternative), scored at 10 bits.

```
 clip (10-bit) ─┬─ preedit run --bypass --qp Q              → plain 10-bit (Main10)   ─┐
                ├─ preedit run --url <served preedit> --qp Q → pre-edited 10-bit      ─┼─ score vs the 10-bit
                └─ preedit run --bypass --bit-depth 8 --qp Q → 8-bit alternative      ─┘  source at 10 bits
```
Prints one JSON document (points, BD-rates of pre-edited vs plain for VMAF-NEG, VMAF v1, PSNR-Y,
XPSNR-Y, and the 8-bit alternative's PSNR-Y at 10 bits). Slow-ish (one Triton, 3 × QPs encodes):
`preedit eval-10bit CLIP [--qps 22,27,32,37]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from preedit.cli import main as cli_main
from preedit.client import bitdepth
from preedit.paths import REPO_ROOT
from preedit.quality.bdrate import bd_rate
from preedit.quality.metrics import score
from preedit.serve import ServerConfig, TritonServer


def _reference_y4m(clip: str, dst: Path) -> Path:
    """The 10-bit source as a 10-bit y4m (what the scores are measured against)."""
    from preedit.client.decode import PyAvDecoder  # lazy: pulls av

    dec = PyAvDecoder(clip)
    info = dec.info
    rate = info.average_rate or 25
    with open(dst, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{info.width} H{info.height} F{rate.numerator}:{rate.denominator} Ip A1:1 C420p10\n"
                 .encode())
        for frame in dec:
            planes = frame.meta.get("yuv10") or tuple(p.astype(np.uint16) << 2 for p in bitdepth.nv12_split(frame.nv12))
            fh.write(b"FRAME\n" + b"".join(p.astype("<u2").tobytes() for p in planes))
    dec.close()
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="preedit eval-10bit", description=__doc__.splitlines()[0])
    ap.add_argument("clip")
    ap.add_argument("--qps", default="22,27,32,37")
    ap.add_argument("--model", default="preedit")
    ap.add_argument("--preset", default="medium")
    args = ap.parse_args(argv)
    qps = [int(q) for q in args.qps.split(",")]
    variants = {"plain10": ["--bypass"], "preedit10": None, "plain8": ["--bypass", "--bit-depth", "8"]}
    points = {k: [] for k in variants}
    with tempfile.TemporaryDirectory(prefix="preedit_tenbit_") as tmp:
        ref = _reference_y4m(args.clip, Path(tmp) / "ref.y4m")
        srv = TritonServer(ServerConfig(model_repository=REPO_ROOT / "model_repository", http_port=0, grpc_port=0,
                                        metrics_port=0))
        srv.start()
        try:
            srv.wait_model_ready(args.model)
            for name, extra in variants.items():
                for qp in qps:
                    out = Path(tmp) / f"{name}-{qp}.mp4"
                    flags = extra if extra is not None else ["--url", srv.grpc_url, "--model", args.model]
                    if cli_main(["run", args.clip, "-o", str(out), "--codec", "hevc", "--qp", str(qp),
                                 "--preset", args.preset, *flags]) != 0:
                        return 1
                    import av  # lazy: av

                    with av.open(str(out)) as c:
                        v = c.streams.video[0]
                        bits = sum(p.size for p in c.demux(v) if p.size) * 8
                        fmt = v.codec_context.format.name
                    s = score(out, ref, bit_depth=10)
                    dur = s.frames / 25.0
                    points[name].append({"qp": qp, "kbps": bits / dur / 1000, "pix_fmt": fmt, **s.metrics})
        finally:
            srv.stop()
    bd = {}
    for metric in ("vmaf_neg", "vmaf_v1", "psnr_y", "xpsnr_y", "vmaf"):
        r = bd_rate([p["kbps"] for p in points["plain10"]], [p[metric] for p in points["plain10"]],
                    [p["kbps"] for p in points["preedit10"]], [p[metric] for p in points["preedit10"]])
        bd[metric] = {"bd_rate_pct": r.value if hasattr(r, "value") else r[0], "note": getattr(r, "warning", None) or getattr(r, "notes", None)}
    r8 = bd_rate([p["kbps"] for p in points["plain10"]], [p["psnr_y"] for p in points["plain10"]],
                 [p["kbps"] for p in points["plain8"]], [p["psnr_y"] for p in points["plain8"]])
    json.dump({"clip": args.clip, "qps": qps, "points": points, "bd_rate_preedit10_vs_plain10": bd,
               "bd_rate_plain8_vs_plain10_psnr_y10": {"bd_rate_pct": r8.value if hasattr(r8, "value") else r8[0]}},
              sys.stdout, indent=1, default=str)
    print()
    return 0

