"""`preedit doctor --bench`: measure a GPU host's stages for the preedit GPU path (run on the host).

```
 versions ─ capabilities (NVDEC/NVENC per codec, raw SDK answers) ─ NVDEC decode fps (real clips)
 ─ CUDA shm region round trip + D2D copy cost ─ network fp32/fp16 on the GPU: mismatch vs CPU, fps
 ─> JSON (--out) + readable log on stdout
```
Usage:
    preedit doctor --bench --bench-out probe.json [--clips DIR] [--quick]
    preedit doctor --flops                              # FLOP/byte count per frame (CPU)
    preedit doctor --make-reference DIR --clips DIR     # CPU + PyAV: NVDEC references
Needs torch with CUDA; PyNvVideoCodec and tritonclient[cuda] are optional (reported if missing).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import List, Optional

import numpy as np

from preedit import doctor
from preedit.client.hardware import capabilities
from preedit.paths import clips_dir

CLIPS = ("edge-rotate-buck-bunny.mp4", "flower.mp4")


def log(msg: str) -> None:
    print(msg, flush=True)


def _ver(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def versions() -> dict:
    import torch  # lazy: torch

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    for name in ("numpy", "cuda-bindings", "cuda-python", "tritonclient", "grpcio", "protobuf", "onnxruntime",
                 "onnxruntime-gpu", "tensorrt", "torch_tensorrt", "setuptools"):
        out[name] = _ver(name)
    try:
        import PyNvVideoCodec as nvc  # lazy: optional dependency

        out["PyNvVideoCodec"] = getattr(nvc, "__version__", "?")
    except Exception as exc:  # noqa: BLE001
        out["PyNvVideoCodec"] = f"import failed: {str(exc).splitlines()[0][:200]}"
    try:
        import tritonclient  # lazy: optional dependency

        out["tritonclient_path"] = str(Path(tritonclient.__file__).parent)
    except Exception:  # noqa: BLE001
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,clocks.max.sm,memory.total,pci.bus_id",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        out["nvidia_smi"] = q.stdout.strip()
    try:
        import onnxruntime  # lazy: optional dependency

        out["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception:  # noqa: BLE001
        pass
    return out


def raw_encoder_probe() -> dict:
    """GetEncoderCaps/CreateEncoder straight from PyNvVideoCodec, in a child process (it can swap contexts)."""
    code = r"""
import json, torch
torch.zeros(1, device='cuda')
res = {}
try:
    import PyNvVideoCodec as nvc
except Exception as e:
    print(json.dumps({'import': repr(e)[:300]})); raise SystemExit
for codec in ('h264', 'hevc', 'av1'):
    try:
        caps = nvc.GetEncoderCaps(codec=codec)
        res[codec + '_caps'] = {k: v for k, v in dict(caps).items() if isinstance(v, (int, float, str, bool))}
    except Exception as e:
        res[codec + '_caps'] = 'error: ' + repr(e)[:300]
    try:
        enc = nvc.CreateEncoder(640, 360, 'NV12', False, codec=codec, preset='P4', gop=30, bf=0, fps=30)
        res[codec + '_create'] = 'created'
        del enc
    except Exception as e:
        res[codec + '_create'] = 'error: ' + repr(e)[:300]
print(json.dumps(res))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except Exception:  # noqa: BLE001
        return {"rc": p.returncode, "stdout": p.stdout[-800:], "stderr": p.stderr[-800:]}


def _decode_once(path: Path, keep_first: bool = False) -> dict:
    import torch  # lazy: torch

    from preedit.client.decode import NvdecDecoder  # lazy: pulls av

    t0 = time.perf_counter()
    dec = NvdecDecoder(path, ring_size=4)
    t1 = time.perf_counter()
    frames, pts, digest0 = 0, [], None
    for f in dec:
        frames += 1
        if keep_first:
            pts.append(f.pts)
            if digest0 is None:
                digest0 = hashlib.sha256(f.nv12.cpu().numpy().tobytes()).hexdigest()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    info = dec.info
    dec.close()
    return {"frames": frames, "create_s": t1 - t0, "decode_s": t2 - t1, "info": info, "pts": pts, "digest0": digest0}


def bench_decode(clips_dir: Path, repeats: int) -> dict:
    import torch  # lazy: torch

    out = {}
    for name in CLIPS:
        path = clips_dir / name
        if not path.is_file():
            out[name] = "missing"
            continue
        try:
            runs = [_decode_once(path, keep_first=(r == 0)) for r in range(repeats)]
            frames = sum(r["frames"] for r in runs)
            decode_s = sum(r["decode_s"] for r in runs)
            info = runs[0]["info"]
            out[name] = {"frames": frames, "fps_steady": round(frames / decode_s, 1),
                         "session_create_ms": round(1000 * sum(r["create_s"] for r in runs[1:]) / max(1, repeats - 1), 1),
                         "first_session_create_ms": round(1000 * runs[0]["create_s"], 1),
                         "size": f"{info.width}x{info.height}", "time_base": str(info.time_base),
                         "rate": str(info.average_rate), "color_range": info.color_range, "codec": info.codec_name,
                         "first_pts": runs[0]["pts"][:6], "frame0_sha256": runs[0]["digest0"],
                         "note": "1 session; demux + NVDEC + D2D copy into the owned ring + per-packet stream sync"}
            # several sessions at once (H100 has 7 NVDEC engines): aggregate fps
            for n_threads in (4,):
                results = []

                def work():
                    torch.cuda.set_device(0)
                    torch.zeros(1, device="cuda")
                    for _ in range(repeats):
                        results.append(_decode_once(path))

                threads = [threading.Thread(target=work) for _ in range(n_threads)]
                t0 = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - t0
                out[name][f"fps_aggregate_{n_threads}_sessions_incl_create"] = round(sum(r["frames"] for r in results) / wall, 1)
        except Exception as exc:  # noqa: BLE001
            out[name] = "error: " + "".join(traceback.format_exception_only(type(exc), exc)).strip()[:400]
    return out


def bench_cuda_shm() -> dict:
    import torch  # lazy: torch

    try:
        import tritonclient.utils.cuda_shared_memory as cudashm  # lazy: optional dependency
    except Exception as exc:  # noqa: BLE001
        return {"import": "error: " + repr(exc)[:300]}
    out = {}
    h3, w = 1620, 1920
    frame = torch.randint(0, 256, (h3, w), dtype=torch.uint8, device="cuda")
    handle = cudashm.create_shared_memory_region("probe_region", h3 * w, 0)
    try:
        out["raw_handle_bytes"] = len(cudashm.get_raw_handle(handle))
        view = torch.from_dlpack(cudashm.as_shared_memory_tensor(handle, "UINT8", [h3 * w])).view(h3, w)
        view.copy_(frame)
        torch.cuda.synchronize()
        back = cudashm.get_contents_as_numpy(handle, np.uint8, [h3, w])
        out["round_trip_equal"] = bool(np.array_equal(back, frame.cpu().numpy()))
        s = torch.cuda.Stream()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(s):
            for _ in range(10):
                view.copy_(frame, non_blocking=True)
            start.record(s)
            for _ in range(200):
                view.copy_(frame, non_blocking=True)
            end.record(s)
        s.synchronize()
        out["d2d_copy_1080p_us"] = round(start.elapsed_time(end) / 200 * 1000, 2)
        t0 = time.perf_counter()
        for _ in range(50):
            with torch.cuda.stream(s):
                view.copy_(frame, non_blocking=True)
            s.synchronize()
        out["d2d_copy_plus_sync_1080p_us"] = round((time.perf_counter() - t0) / 50 * 1e6, 1)
        cudashm.set_shared_memory_region_from_dlpack(handle, [frame.view(-1)])
        out["set_from_dlpack_equal"] = bool(torch.equal(view, frame))
    except Exception as exc:  # noqa: BLE001
        out["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:400]
    finally:
        cudashm.destroy_shared_memory_region(handle)
    return out


def _timed(fn, iters: int, warmup: int = 5) -> float:
    import torch  # lazy: torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def bench_network(quick: bool) -> dict:
    import torch  # lazy: torch

    from preedit.export.onnx_export import synthetic_frames  # lazy: pulls torch
    from preedit.network import NV12PreEditor, NetConfig, PreEditorNet, to_uint8  # lazy: pulls torch

    gen = torch.Generator().manual_seed(0)
    net = PreEditorNet(NetConfig())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    net.eval()
    cpu = NV12PreEditor(net)
    net_gpu = PreEditorNet(net.config).eval()
    net_gpu.load_state_dict(net.state_dict())
    net_gpu = net_gpu.cuda()
    net_half = PreEditorNet(net.config).eval()
    net_half.load_state_dict(net.state_dict())
    net_half = net_half.cuda().half()

    def fp32(x, q):
        return to_uint8(net_gpu(x.float(), q))

    def fp16_half(x, q):
        return to_uint8(net_half(x.half(), q.half()).float())

    def fp16_autocast(x, q):
        with torch.autocast("cuda", dtype=torch.float16):
            y = net_gpu(x.float(), q)
        return to_uint8(y.float())

    variants = {"fp32": fp32, "fp16_half": fp16_half, "fp16_autocast": fp16_autocast}
    out = {"mismatch_vs_cpu_fp32": {}, "ms_per_call": {}, "fps": {}}
    x = torch.from_numpy(synthetic_frames(1, 1080, 1920, seed=3))
    q = torch.full((1, 1), 30.0)
    with torch.no_grad():
        want = cpu(x, q)
        for name, fn in variants.items():
            got = fn(x.cuda(), q.cuda()).cpu()
            d = (got.int() - want.int()).abs()
            out["mismatch_vs_cpu_fp32"][name] = {"max_abs_diff": int(d.max()), "mismatch_share": float((d > 0).float().mean())}
        torch.backends.cudnn.allow_tf32 = False
        got = fp32(x.cuda(), q.cuda()).cpu()
        d = (got.int() - want.int()).abs()
        out["mismatch_vs_cpu_fp32"]["fp32_tf32_off"] = {"max_abs_diff": int(d.max()), "mismatch_share": float((d > 0).float().mean())}
        torch.backends.cudnn.allow_tf32 = True
        shapes = [(1, 1080, 1920), (4, 1080, 1920), (16, 1080, 1920), (1, 2160, 3840), (4, 2160, 3840)]
        iters = 20 if quick else 40
        for b, h, w in shapes:
            xb = torch.randint(0, 256, (b, h * 3 // 2, w), dtype=torch.uint8, device="cuda")
            qb = torch.full((b, 1), 30.0, device="cuda")
            for name, fn in variants.items():
                ms = _timed(lambda: fn(xb, qb), iters)
                key = f"{name}_b{b}_{h}p"
                out["ms_per_call"][key] = round(ms, 3)
                out["fps"][key] = round(b * 1000.0 / ms, 1)
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if not quick:
            for mode in ("default", "reduce-overhead"):
                for b, h, w in ((1, 1080, 1920), (1, 2160, 3840), (4, 1080, 1920)):
                    key = f"inductor_{mode}_fp16_autocast_b{b}_{h}p"
                    try:
                        torch._dynamo.reset()
                        t0 = time.perf_counter()
                        compiled = torch.compile(fp16_autocast, mode=mode, dynamic=False)
                        xb = torch.randint(0, 256, (b, h * 3 // 2, w), dtype=torch.uint8, device="cuda")
                        qb = torch.full((b, 1), 30.0, device="cuda")
                        got = compiled(xb, qb).clone()
                        out.setdefault("compile_s", {})[key] = round(time.perf_counter() - t0, 1)
                        ms = _timed(lambda: compiled(xb, qb), 50)
                        out["ms_per_call"][key] = round(ms, 3)
                        out["fps"][key] = round(b * 1000.0 / ms, 1)
                        d = (got.int() - fp16_autocast(xb, qb).int()).abs()
                        out.setdefault("inductor_vs_eager_autocast_max_abs_diff", {})[key] = int(d.max())
                    except Exception as exc:  # noqa: BLE001
                        out.setdefault("compile_error", {})[key] = repr(exc)[:300]
    return out


def count_flops_bytes() -> dict:
    """Convolution FLOPs and memory traffic of `NV12PreEditor` per frame (CPU; no GPU needed).

    FLOPs from `torch.utils.flop_counter` (2 per MAC); bytes = inputs + outputs of every non-view
    aten op (what eager PyTorch moves), and the fused minimum (NV12 uint8 in + out).
    """
    import torch  # lazy: torch
    from torch.utils._python_dispatch import TorchDispatchMode  # lazy: torch
    from torch.utils._pytree import tree_leaves  # lazy: torch
    from torch.utils.flop_counter import FlopCounterMode  # lazy: torch

    from preedit.network import NV12PreEditor, NetConfig, PreEditorNet  # lazy: pulls torch

    views = {"slice", "alias", "unsqueeze", "squeeze", "view", "expand", "split", "chunk", "select",
             "t", "transpose", "_unsafe_view", "detach", "split_with_sizes"}

    class _Bytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bytes, self.elementwise = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name in views:
                return out
            ins = [a for a in tree_leaves((args, kwargs or {})) if isinstance(a, torch.Tensor) and a.numel() > 64]
            outs = [a for a in tree_leaves(out) if isinstance(a, torch.Tensor)]
            self.bytes += sum(a.numel() * a.element_size() for a in ins + outs)
            if name not in ("convolution", "addmm"):
                self.elementwise += sum(a.numel() for a in outs)
            return out

    net = PreEditorNet(NetConfig()).eval()
    model = NV12PreEditor(net)
    out = {"parameters": sum(p.numel() for p in net.parameters())}
    for h, w in ((1080, 1920), (2160, 3840)):
        x = torch.zeros(1, h * 3 // 2, w, dtype=torch.uint8)
        q = torch.full((1, 1), 32.0)
        flops, counter = FlopCounterMode(display=False), _Bytes()
        with torch.no_grad():
            with flops:
                model(x, q)
            with counter:
                model(x, q)
        out[f"{h}p"] = {"conv_gflop": round(flops.get_total_flops() / 1e9, 3),
                        "elementwise_mops": round(counter.elementwise / 1e6, 1),
                        "eager_mbytes": round(counter.bytes / 1e6, 1), "fused_min_mbytes": round(2 * x.numel() / 1e6, 2)}
    return out


def software_nv12_digests(clip_path: Path):
    """(per-frame sha256 of FFmpeg's software decode as NV12, pts, first NV12 frame, time base)."""
    import av  # lazy: av

    digests, pts, first = [], [], None
    with av.open(str(clip_path)) as c:
        time_base = str(c.streams.video[0].time_base)
        for frame in c.decode(c.streams.video[0]):
            nv12 = frame.to_ndarray(format="nv12")
            first = nv12 if first is None else first
            digests.append(hashlib.sha256(nv12.tobytes()).hexdigest())
            pts.append(frame.pts)
    return digests, pts, first, time_base


def make_reference(clips_dir: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in CLIPS:
        digests, pts, first, time_base = software_nv12_digests(clips_dir / name)
        np.savez_compressed(out_dir / f"{Path(name).stem}.npz", digests=np.array(digests), pts=np.array(pts),
                            first=first, time_base=np.array(time_base))
        log(f"reference {name}: {len(digests)} frames")


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the `preedit doctor` options of the GPU stage measurements."""
    parser.add_argument("--bench", action="store_true", help="also measure NVDEC decode, CUDA shm and the network on the GPU")
    parser.add_argument("--bench-out", type=Path, default=None, help="write the --bench measurements as JSON here")
    parser.add_argument("--clips", type=Path, default=None, help="clips for --bench / --make-reference (default: shared clips)")
    parser.add_argument("--quick", action="store_true", help="--bench: fewer repeats")
    parser.add_argument("--make-reference", type=Path, default=None, metavar="DIR",
                        help="write NVDEC reference digests of the probe clips (CPU + PyAV) and exit")
    parser.add_argument("--flops", action="store_true", help="print the FLOP/byte count per frame (CPU) and exit")
    return parser


def bench(args: argparse.Namespace) -> dict:
    """The GPU stage measurements (`--bench`): versions, raw encoder probe, decode, CUDA shm, network."""
    import torch  # lazy: torch


    clips = args.clips or clips_dir()
    if not torch.cuda.is_available():
        return {"error": "no CUDA device: nothing to measure"}
    report = {"when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    steps = [("versions", versions), ("raw_encoder_probe", raw_encoder_probe),
             ("decode", lambda: bench_decode(clips, 2 if args.quick else 5)),
             ("cuda_shm", bench_cuda_shm), ("network", lambda: bench_network(args.quick))]
    for name, fn in steps:
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - a failed step is part of the report
            value = {"error": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-1500:]}
        report[name] = value
        log(f"== {name} ({time.perf_counter() - t0:.1f} s)\n{json.dumps(value, indent=1, default=str)}")
        if args.bench_out:
            args.bench_out.write_text(json.dumps(report, indent=2, default=str))
    return report


def main(argv: Optional[List[str]] = None) -> int:
    """`preedit doctor`: the core report (`preedit.doctor`) with this machine's GPU capabilities
    (`preedit.client.hardware`) and, with `--bench`, the stage measurements above."""
    parser = setup_args(doctor.setup_args(argparse.ArgumentParser(prog="preedit doctor",
                                                                 description=doctor.__doc__.split("\n")[0])))
    args = parser.parse_args(argv)
    if args.flops:
        log(json.dumps(count_flops_bytes(), indent=1))
        return 0
    if args.make_reference:
        make_reference(args.clips or clips_dir(), args.make_reference)
        return 0
    return doctor.run(args, capabilities, bench if args.bench else None)
