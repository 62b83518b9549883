"""The Python API: `PreEditor` (drop the pre-editor into your own pipeline) and `transcode` (`preedit run`).

```
 your decoder ──NV12 uint8 [N, H*3/2, W] (NumPy | torch | DLPack)──> PreEditor.edit ──same type──> your encoder
 av.VideoFrame ─────────────────────────────────────────────────────> PreEditor.edit_frame ──> av.VideoFrame
 transcode(src, dst, ...) = preedit run src -o dst ... ──> the --summary-json dict
```
Both run on the project's seams: `PreEditor` wraps `preedit.engines` (TritonEngine, OrtEngine,
TorchEngine, TensorRTEngine); `transcode` drives `preedit.client.run`'s steps. Faults raise the
`preedit.errors` classes the CLI maps to exit codes. See docs/api.md.
"""

from __future__ import annotations

import contextlib
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, List, Optional, Union

import numpy as np

from preedit import engines
from preedit.color import nv12_full_to_limited, nv12_limited_to_full
from preedit.engines import qp_column
from preedit.errors import ModelError, UsageError
from preedit.paths import model_repository
from preedit.spec import DEFAULT_QP

ENGINES = ("triton", "onnxruntime", "torch", "tensorrt")
DETERMINISTIC_MODEL = "preedit_int8"
ProgressFn = Callable[[int, Optional[int]], None]


def _model_file(model: str, repository: Optional[Path], filename: str) -> Path:
    """`model` as a file path, else `<repository>/<model>/1/<filename>`."""
    path = Path(model)
    if path.suffix and path.is_file():
        return path

    found = Path(repository or model_repository()) / model / "1" / filename
    if not found.is_file():
        raise ModelError(f"model {model!r}: neither a file nor {found}")
    return found


class PreEditor:
    """The pre-editor as a library object; use it as a context manager.

    Args:
        engine: "triton" (the served model over gRPC), "onnxruntime" (in-process ONNX Runtime),
            "torch" (a training checkpoint in-process) or "tensorrt" (a serialized engine, GPU).
        url: gRPC `host:port` of a running Triton; None with engine="triton" starts an embedded
            server (127.0.0.1, free ports) on enter and stops it on exit.
        model: served model name (triton); for the in-process engines a model name in the model
            repository (`<repo>/<model>/1/model.onnx`) or a file (.onnx, a checkpoint, a .plan).
        device: "cpu" or "cuda" (torch/onnxruntime placement; tensorrt needs "cuda").
        deterministic: use the bit-exact integer model (`preedit_int8`) and, for onnxruntime,
            no graph optimisations.
        model_repository: repository for the embedded server / model lookup (default the project's).
        max_batch: frames per model call; `edit` splits larger batches.
        inflight: model calls in flight at once (Triton requests; 1 for in-process engines).

    `edit(frames, qp=None)`: NV12 uint8 `[N, H*3/2, W]` (or one frame `[H*3/2, W]`) as NumPy,
    a torch tensor (CPU or CUDA) or any DLPack object → the edited frames, same type, shape and
    device. `qp` is a float or N values (None: the model's default, `preedit.spec.DEFAULT_QP`).
    `edit_frame(frame, qp=None)`: an `av.VideoFrame` → an edited `av.VideoFrame` with the same
    size, pts, time base and colour tags (range, matrix, primaries, transfer).

    Raises:
        UsageError: bad argument (engine name, shape, dtype). ServerError: Triton unreachable or
        failed. ModelError: model missing or invalid.
    """

    def __init__(self, engine: str = "triton", url: Optional[str] = None, model: str = "preedit",
                 device: str = "cpu", deterministic: bool = False, *,
                 model_repository: Optional[Union[str, Path]] = None, max_batch: int = 8,
                 inflight: int = 2) -> None:
        if engine not in ENGINES:
            raise UsageError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
        if device not in ("cpu", "cuda"):
            raise UsageError(f"unknown device {device!r}; valid: cpu, cuda")
        if max_batch < 1 or inflight < 1:
            raise UsageError(f"max_batch and inflight must be >= 1, got {max_batch}, {inflight}")
        if deterministic and model not in ("preedit", DETERMINISTIC_MODEL):
            raise UsageError(f"deterministic=True uses model {DETERMINISTIC_MODEL!r}; drop model={model!r}")
        self.engine_name = engine
        self.url = url
        self.model = DETERMINISTIC_MODEL if deterministic else model
        self.device = device
        self.deterministic = deterministic
        self.model_repository = None if model_repository is None else Path(model_repository)
        self.max_batch = max_batch
        self.inflight = inflight if engine == "triton" else 1
        self._engine: Any = None
        self._server: Any = None
        self._pool: Optional[ThreadPoolExecutor] = None

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> "PreEditor":
        """Start the engine (and the embedded server); `with PreEditor(...)` calls this."""
        if self._engine is not None:
            return self
        try:
            self._engine = self._make_engine()
        except BaseException:
            self.close()
            raise
        if self.inflight > 1:
            self._pool = ThreadPoolExecutor(self.inflight, thread_name_prefix="preedit-api")
        return self

    def _make_engine(self):
        if self.engine_name == "triton":
            url = self.url
            if url is None:
                from preedit.client.run import RunConfig, start_server  # lazy: pulls av

                self._server, url = start_server(RunConfig(inputs=["-"], outputs=["-"], model=self.model,
                                                           model_repository=self.model_repository))
            return engines.TritonEngine(url, self.model, max_batch=self.max_batch)
        if self.engine_name == "onnxruntime":
            path = _model_file(self.model, self.model_repository, "model.onnx")
            providers = ("CUDAExecutionProvider", "CPUExecutionProvider") if self.device == "cuda" \
                else ("CPUExecutionProvider",)
            return engines.OrtEngine(path, threads=0, optimize=not self.deterministic, providers=providers)
        if self.engine_name == "torch":
            path = Path(self.model)
            if not path.is_file():
                raise ModelError(f"engine='torch' needs a checkpoint file as model=, got {self.model!r}")
            return engines.TorchEngine.from_checkpoint(path, device=self.device)
        if self.device != "cuda":
            raise UsageError("engine='tensorrt' runs on device='cuda' only")
        path = _model_file(self.model, self.model_repository, "model.plan")
        return engines.TensorRTEngine(path.read_bytes())

    def close(self) -> None:
        """Stop the pool, the engine and the embedded server (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._engine is not None and hasattr(self._engine, "close"):
            with contextlib.suppress(Exception):
                self._engine.close()
        self._engine = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "PreEditor":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def description(self) -> str:
        """What runs the model (for logs)."""
        return self._engine.description if self._engine is not None else f"{self.engine_name} (not open)"

    # -- editing -------------------------------------------------------------------------------
    def edit(self, frames: Any, qp: Union[None, float, np.ndarray] = None) -> Any:
        """Pre-edit NV12 uint8 `[N, H*3/2, W]` (or `[H*3/2, W]`) frames; returns the same type and device."""
        if self._engine is None:
            raise UsageError("PreEditor is not open: use `with PreEditor(...) as p:` or call open()")
        if _is_torch(frames) and frames.device.type == "cuda" and hasattr(self._engine, "run_torch"):
            return self._edit_cuda_tensor(frames, qp)
        arr, restore = _to_numpy(frames)
        single = arr.ndim == 2
        batch = arr[None] if single else arr
        _check_nv12(batch)
        out = self._run(batch, qp)
        return restore(out[0] if single else out)

    def _qp_column(self, qp, n: int) -> np.ndarray:
        try:
            return qp_column(DEFAULT_QP if qp is None else qp, n)
        except ValueError:
            raise UsageError(f"qp must be a number or {n} values, got shape {np.shape(qp)}") from None

    def _run(self, batch: np.ndarray, qp) -> np.ndarray:
        q = self._qp_column(qp, batch.shape[0])
        step = self.max_batch
        chunks = [(batch[i:i + step], q[i:i + step]) for i in range(0, batch.shape[0], step)]
        if self._pool is None or len(chunks) == 1:
            outs = [self._engine.run(np.ascontiguousarray(c), cq) for c, cq in chunks]
        else:
            outs = [f.result() for f in [self._pool.submit(self._engine.run, np.ascontiguousarray(c), cq)
                                         for c, cq in chunks]]
        return np.concatenate(outs, axis=0) if outs else batch.copy()

    def _edit_cuda_tensor(self, frames, qp):
        import torch  # lazy: torch

        single = frames.ndim == 2
        batch = frames[None] if single else frames
        _check_nv12(batch)
        q = torch.from_numpy(self._qp_column(qp, batch.shape[0])).to(batch.device)
        out = self._engine.run_torch(batch.contiguous(), q)
        return out[0] if single else out

    def edit_frame(self, frame, qp: Optional[float] = None):
        """Pre-edit one `av.VideoFrame` (8-bit 4:2:0 or anything PyAV can convert to it).

        Returns a yuv420p `av.VideoFrame` with the input's size, pts, time base and colour tags.
        Odd sizes are not supported (NV12 needs even width and height).
        """
        from preedit.client.decode._pyav import DIRECT_FORMATS, is_full_range, yuv420p_to_nv12  # lazy: pulls av
        from preedit.client.encode._pyav import nv12_to_frame  # lazy: pulls av

        if frame.width % 2 or frame.height % 2:
            raise UsageError(f"edit_frame needs an even frame size, got {frame.width}x{frame.height}")
        full = is_full_range(frame)
        src = frame
        if src.format.name not in DIRECT_FORMATS:
            rng = 2 if full else 1
            src = src.reformat(format="yuv420p", src_color_range=rng, dst_color_range=rng)
        nv12 = yuv420p_to_nv12(src, frame.width, frame.height)
        nv12 = nv12_full_to_limited(nv12) if full else nv12
        edited = self.edit(nv12[None], qp)[0]
        out = nv12_to_frame(np.ascontiguousarray(nv12_limited_to_full(edited) if full else edited), full)
        out.pts, out.time_base = frame.pts, frame.time_base
        for tag in ("color_range", "colorspace", "color_primaries", "color_trc"):
            with contextlib.suppress(AttributeError, ValueError, TypeError):
                setattr(out, tag, getattr(frame, tag))
        return out

    def __repr__(self) -> str:
        return (f"PreEditor(engine={self.engine_name!r}, url={self.url!r}, model={self.model!r}, "
                f"device={self.device!r}, deterministic={self.deterministic})")


def _check_nv12(batch) -> None:
    shape = tuple(batch.shape)
    dtype = str(getattr(batch, "dtype", ""))
    if len(shape) != 3 or shape[1] % 3 or shape[2] % 2 or (shape[1] * 2 // 3) % 2:
        raise UsageError(f"frames must be NV12 [N, H*3/2, W] with even H and W, got shape {shape}")
    if not dtype.endswith("uint8"):
        raise UsageError(f"frames must be uint8, got {dtype}")


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "device")


def _to_numpy(x):
    """(NumPy view or copy of x, function turning a NumPy result back into x's type and device)."""
    if isinstance(x, np.ndarray):
        return x, lambda out: out
    if _is_torch(x):
        import torch  # lazy: torch

        dev = x.device
        return x.detach().cpu().numpy(), lambda out: torch.from_numpy(out).to(dev)
    if hasattr(x, "__dlpack__"):
        try:
            arr = np.from_dlpack(x)
            on_gpu = False
        except (RuntimeError, TypeError, BufferError):  # a device buffer: go through torch
            import torch  # lazy: torch

            arr, on_gpu = torch.from_dlpack(x).cpu().numpy(), True
        # the producer's library rebuilds its own type (cupy.from_dlpack, ...); else NumPy / torch CUDA comes back
        make = getattr(sys.modules.get(type(x).__module__.split(".")[0]), "from_dlpack", None)

        def restore(out: np.ndarray):
            src = out
            if on_gpu:
                import torch  # lazy: torch

                src = torch.from_numpy(out).cuda()
            return make(src) if make is not None else src

        return arr, restore
    raise UsageError(f"frames must be a NumPy array, a torch tensor or a DLPack object, got {type(x).__name__}")


def transcode(src: Union[str, Path], dst: Union[str, Path], codec: str = "hevc", crf: Optional[float] = None,
              qp: Optional[int] = None, bitrate_kbps: Optional[float] = None, preset: Optional[str] = None, *,
              url: Optional[str] = None, model: str = "preedit", deterministic: bool = False,
              bypass: bool = False, device: str = "cpu", max_frames: Optional[int] = None,
              model_repository: Optional[Union[str, Path]] = None, latency_budget_ms: Optional[float] = None,
              inflight: int = 4, progress: Optional[ProgressFn] = None) -> dict:
    """`preedit run SRC -o DST ...` as a function: returns the summary (the `--summary-json` schema).

    Args mirror the CLI flags (`codec`, `crf`, `qp`, `bitrate_kbps`, `preset`, `url`, `model`,
    `deterministic`, `bypass`, `device`, `max_frames`, `model_repository`, `latency_budget_ms`,
    `inflight`). `progress(frames_encoded, total)` is called after every encoded frame from the
    encoder thread (`total`: the input's frame count if known, else None); an exception it
    raises stops the run (the output is still finalised). Nothing is printed.

    Raises the `preedit.errors` classes, e.g. InputError (bad input), ServerError, EncodeError;
    the output file is playable whatever the outcome.
    """
    from preedit.client import run as r  # lazy: pulls av
    from preedit.client.backends import select_backends  # lazy: pulls av
    from preedit.client.encode import EncoderSettings  # lazy: pulls av

    if deterministic and model not in ("preedit", DETERMINISTIC_MODEL):
        raise UsageError(f"deterministic=True uses model {DETERMINISTIC_MODEL!r}; drop model={model!r}")
    cfg = r.RunConfig(inputs=[str(src)], outputs=[str(dst)],
                      encoder=EncoderSettings(codec=codec, crf=crf, qp=qp, bitrate_kbps=bitrate_kbps, preset=preset),
                      model=DETERMINISTIC_MODEL if deterministic else model, url=url, bypass=bypass, device=device,
                      inflight=inflight, latency_budget_ms=latency_budget_ms, max_frames=max_frames,
                      model_repository=None if model_repository is None else Path(model_repository))
    streams = r.plan_streams(cfg)
    backends = select_backends(cfg.device, output_codec=cfg.encoder.codec)
    server = None
    try:
        r.open_decoders(cfg, backends, streams)
        server, server_url = r.start_server(cfg)
        r.build_pipelines(cfg, backends, streams, server_url)
        if progress is not None:
            total = streams[0].decoder.info.frame_count_hint
            if total is not None and max_frames is not None:
                total = min(total, max_frames)
            streams[0].pipeline.stats.on_frame = lambda n: progress(n, total)
        r.run_streams(streams)
        summaries: List[dict] = r.report(cfg, backends, streams, echo=False)
        r._raise_first_error(streams)
        return summaries[0]
    finally:
        r.teardown(streams, server, cfg.teardown_timeout_s)
