"""libvmaf_cuda against CPU libvmaf on real hardware (used by deploy/gpu_check.sh).

Makes an 8-bit reference (the first FRAMES frames of CLIP at <= 540 lines, or a test pattern) and
an x264 encode of it, scores the encode with `vmaf_device="cuda"` and with `"cpu"`, and prints one
JSON line with both metric sets, their differences and the two scoring times. Exit 0 only if the
device resolved to CUDA and VMAF / VMAF-NEG agree within --tolerance (the other metrics run on CPU
in both and must be identical).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=None, help="source clip (default: testsrc2 1280x720)")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--tolerance", type=float, default=0.5, help="max |VMAF(cuda) - VMAF(cpu)| accepted")
    args = ap.parse_args(argv)
    from preedit.quality.ffmpeg import ffmpeg_exe, run_command
    from preedit.quality.metrics import CUDA_VMAF_MODELS, METRICS, resolve_vmaf_device, score

    device, note = resolve_vmaf_device("cuda")
    row = {"vmaf_device": device, "note": note}
    if device != "cuda":
        print(json.dumps(row))
        return 1
    with tempfile.TemporaryDirectory(prefix="preedit_vmaf_cuda_") as tmp:
        ref, dist = Path(tmp) / "ref.y4m", Path(tmp) / "dist.mp4"
        src = ["-i", str(args.clip)] if args.clip else ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"]
        run_command([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *src, "-frames:v", str(args.frames),
                     "-vf", "scale=-2:'min(540,ih)',format=yuv420p", "-f", "yuv4mpegpipe", str(ref)], what="reference")
        run_command([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(ref), "-c:v", "libx264",
                     "-preset", "veryfast", "-crf", "35", str(dist)], what="x264 encode")
        times, scores = {}, {}
        for dev in ("cuda", "cpu"):
            t0 = time.perf_counter()
            scores[dev] = score(dist, ref, vmaf_device=dev, expect_frames=args.frames)
            times[dev] = round(time.perf_counter() - t0, 2)
    row.update(seconds=times, cuda=scores["cuda"].metrics, cpu=scores["cpu"].metrics,
               diff={k: scores["cuda"].metrics[k] - scores["cpu"].metrics[k] for k in METRICS})
    ok = all(abs(row["diff"][k]) <= args.tolerance for k in CUDA_VMAF_MODELS)
    ok = ok and all(row["diff"][k] == 0 for k in METRICS if k not in CUDA_VMAF_MODELS)
    row["ok"] = ok
    print(json.dumps(row))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
