"""URL input through NVDEC on real hardware (used by deploy/gpu_check.sh; issue 18 row 10).

Decodes CLIP given as a `file://` URL, and a stream copy of it in MPEG-TS (`file://` again), with
the client's NVDEC decoder (PyAV demuxes, NVDEC decodes the Annex-B packets) and compares each with
the CPU decoder on the plain file: frame count, pts and pixels (NVDEC matched FFmpeg bit for bit on
an H100 for local files). Prints one JSON line per input; exit 0 only if all match.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def _ts_copy(src: Path, dst: Path) -> Path:
    """Video stream copy into MPEG-TS (Annex-B in-band), by FFmpeg's CLI (it derives the DTS that
    a Matroska source does not store)."""
    from preedit.quality.ffmpeg import ffmpeg_exe, run_command

    run_command([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-map", "0:v:0",
                 "-c", "copy", "-f", "mpegts", str(dst)], what="MPEG-TS stream copy")
    return dst


def _frames(dec, limit):
    out = []
    try:
        for frame in dec:
            if len(out) >= limit:
                break
            nv12 = frame.nv12.cpu().numpy() if hasattr(frame.nv12, "cpu") else frame.nv12
            out.append((frame.pts, nv12.copy()))
    finally:
        dec.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip", type=Path, help="H.264/HEVC clip (MP4/MKV: the Annex-B filter path)")
    ap.add_argument("--frames", type=int, default=60, help="frames compared per input")
    ap.add_argument("--device-id", type=int, default=0)
    args = ap.parse_args(argv)
    import numpy as np

    from preedit.client.decode import PyAvDecoder, make_nvdec_decoder

    ok = True
    with tempfile.TemporaryDirectory(prefix="preedit_url_nvdec_") as tmp:
        ts = _ts_copy(args.clip, Path(tmp) / "copy.ts")
        for path in (args.clip.resolve(), ts):
            ref = _frames(PyAvDecoder(str(path)), args.frames)
            got = _frames(make_nvdec_decoder(path.as_uri(), device_id=args.device_id), args.frames)
            n = min(len(ref), len(got))
            same_pts = [p for p, _ in ref[:n]] == [p for p, _ in got[:n]]
            exact = sum(int(np.array_equal(a, b)) for (_, a), (_, b) in zip(ref[:n], got[:n]))
            max_diff = max((int(np.abs(a.astype(int) - b.astype(int)).max()) for (_, a), (_, b) in zip(ref[:n], got[:n])),
                           default=-1)
            row = {"input": path.as_uri(), "frames_cpu": len(ref), "frames_nvdec": len(got), "pts_equal": same_pts,
                   "bit_exact_frames": exact, "max_abs_diff": max_diff}
            row["ok"] = len(ref) == len(got) > 0 and same_pts and max_diff <= 1
            ok = ok and row["ok"]
            print(json.dumps(row))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
