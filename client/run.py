"""`preedit run IN [IN ...] -o OUT`: decode → pre-edit through Triton → encode, with a summary.

```
 IN (file | udp:// | raw .yuv) ──> decode ──> Triton (system shm ring) ──> encode ──> OUT
                                             (embedded server unless --url)        (.mp4 .mkv .ts .y4m)
```
Examples:
    preedit run in.mp4 -o out.mp4 --codec hevc --crf 28
    preedit run in.mp4 -o ref.mp4 --bypass                # same path, no pre-editing (A/B)
    preedit run udp://127.0.0.1:5000 -o live.ts --url 127.0.0.1:8001 --latency-budget-ms 40
    preedit run in.mp4 -o udp://127.0.0.1:6000 --realtime --latency-budget-ms 40   # MPEG-TS over UDP
    preedit run in.mp4 -o www/live.m3u8 --realtime --hls-time 2 --hls-list-size 6  # live HLS window
    preedit run a.mp4 b.mp4 -o outdir/                    # several streams share one server
    preedit run --demo
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from preedit.client import segment as scale_out
from preedit.client.backends import Backends, select_backends
from preedit.client.checks import check_run, partial_output_note
from preedit.client.decode import decoder_thread_type
from preedit.client.encode import EncoderSettings, QpFollower, container_for, model_qp
from preedit.client.interfaces import Decoder, Encoder, PreEditor
from preedit.client.pipeline import Pipeline, PipelineConfig, run_threads
from preedit.client.progress import progress_bar
from preedit.client.stats import RunStats, format_summary
from preedit.client.telemetry import serve_metrics
from preedit.client.workers import run_workers
from preedit.codecs import ENCODER_OF, PARAMS_OPTION
from preedit.errors import InputError, ModelError, PreeditError, UsageError
from preedit.paths import REPO_ROOT, clips_dir, model_repository
from preedit.sched import usable_cores
from preedit.serve import ServerConfig, TritonServer, auth_headers

log = logging.getLogger(__name__)

DEFAULT_MODEL = "preedit"
DETERMINISTIC_MODEL = "preedit_int8"
DEMO_CLIP = "flower.mp4"
#: Seconds from the last frame to a finished teardown, whatever the server does (issue 12 row 10).
TEARDOWN_TIMEOUT_S = 5.0


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """`--help` keeps the examples' layout and shows each option's default (`run`, `ladder`), unless
    the help already names it or there is none (None, off, empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def setup_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.formatter_class = HelpFormatter
    parser.add_argument("inputs", nargs="*", metavar="IN", help="input files or URLs (udp://, raw .yuv; no srt://: PyAV's FFmpeg has no SRT protocol)")
    parser.add_argument("-o", "--output", action="append", default=[], metavar="OUT",
                        help="output file (.mp4 .mkv .ts .y4m), live HLS playlist (DIR/live.m3u8: sliding window), "
                             "network stream (udp://HOST:PORT, MPEG-TS), one per input, or a folder for several inputs")
    enc = parser.add_argument_group("encoder")
    enc.add_argument("--codec", default="hevc", choices=list(ENCODER_OF),
                     help="libx265, libsvtav1 or libx264 (default hevc)")
    enc.add_argument("--crf", type=float, default=None, help="constant rate factor (default 28/35/23)")
    enc.add_argument("--qp", type=int, default=None, help="constant QP (also sent to the model as its QP input)")
    enc.add_argument("--bitrate", type=float, default=None, metavar="KBPS", help="target bitrate in kbit/s")
    enc.add_argument("--preset", default=None, help="x264/x265 preset name, or SVT-AV1 preset 0..13")
    enc.add_argument("--bit-depth", type=int, default=None, choices=[8, 10],
                     help="output bit depth (default: the input's; 10-bit input → HEVC Main10 / AV1 10-bit)")
    enc.add_argument("--keyint", type=int, default=None, metavar="FRAMES", help="max GOP length (default: encoder's)")
    enc.add_argument("--closed-gop", action="store_true",
                     help="fixed closed GOP (needs --keyint): an IDR every --keyint frames exactly, no scene-cut "
                          "or open-GOP key frames; with --segment/--workers the cuts fall on this GOP grid, so "
                          "the joined file has the key frames of one whole run")
    enc.add_argument("--maxrate", type=float, default=None, metavar="KBPS", help="VBV peak rate cap, kbit/s (with --crf or --bitrate)")
    enc.add_argument("--bufsize", type=float, default=None, metavar="KBITS", help="VBV buffer size, kbit")
    enc.add_argument("--tune", default=None, help="x264/x265 tune name, or SVT-AV1 tune 0|1|2")
    for _opt in PARAMS_OPTION.values():
        enc.add_argument(f"--{_opt}", default=None, metavar="K=V:K=V",
                         help=f"pass-through {_opt} (checked with the encoder; only with its --codec)")
    srv = parser.add_argument_group("pre-editor")
    srv.add_argument("--url", default=None, help="gRPC host:port of a running Triton (default: start one)")
    srv.add_argument("--model", default=None, help=f"served model name (default {DEFAULT_MODEL})")
    srv.add_argument("--deterministic", action="store_true",
                     help=f"use the bit-exact integer model (= --model {DETERMINISTIC_MODEL})")
    srv.add_argument("--model-repository", type=Path, default=None,
                     help="repository for the embedded server (default: the project's model_repository/)")
    srv.add_argument("--triton-metrics-port", type=int, default=0,
                     help="Prometheus port of the embedded server (default 0: a free port, logged)")
    srv.add_argument("--bypass", action="store_true", help="encode without pre-editing (A/B reference)")
    srv.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                     help="back ends: cpu, cuda (NVDEC/CUDA shm/NVENC where present), auto (default cpu)")
    srv.add_argument("--inflight", type=int, default=4, help="requests in flight per stream (shm slots)")
    srv.add_argument("--frames-per-request", type=int, default=1,
                     help="consecutive frames one request carries at most (CPU shm transport; default 1). "
                          "Fewer requests cost less gRPC and hand-off a frame, at up to N-1 frames of latency; "
                          "a group not full within 5 ms goes as it is")
    srv.add_argument("--request-timeout-s", type=float, default=30.0, help="per-request deadline")
    srv.add_argument("--connect-timeout-s", type=float, default=10.0,
                     help="how long to keep trying to reach the server before giving up")
    srv.add_argument("--teardown-timeout-s", type=float, default=TEARDOWN_TIMEOUT_S,
                     help="after the last frame: at most this long for in-flight requests, unregistering "
                          f"shm and stopping the embedded server, even when the server is frozen (default {TEARDOWN_TIMEOUT_S:g})")
    live = parser.add_argument_group("live")
    live.add_argument("--latency-budget-ms", type=float, default=None,
                      help="encode a frame unedited if its pre-edit round trip would exceed this")
    live.add_argument("--read-timeout-s", type=float, default=10.0,
                      help="URL input: give up opening after this long; silence this long ends the stream")
    live.add_argument("--realtime", action="store_true", help="read file input at its frame rate (like ffmpeg -re)")
    live.add_argument("--hls-time", type=float, default=2.0, metavar="S",
                      help="live HLS output (.m3u8): segment length in seconds (and GOP, unless --keyint)")
    live.add_argument("--hls-list-size", type=int, default=6, metavar="N",
                      help="live HLS output: segments in the sliding-window playlist (older ones are deleted)")
    out = parser.add_argument_group("reporting")
    out.add_argument("--metrics-port", type=int, default=None,
                     help="serve Prometheus metrics on 127.0.0.1:PORT (0 picks a free port)")
    out.add_argument("--summary-json", type=Path, default=None, help="also write the summary as JSON")
    out.add_argument("--max-frames", type=int, default=None, help="stop after N frames of each input")
    out.add_argument("--demo", action="store_true",
                     help=f"pre-edit the bundled clip {DEMO_CLIP} to out/demo.mp4 and print the summary")
    out.add_argument("--queue-size", type=int, default=8, help="frames per inter-stage queue")
    scale_out.setup_args(parser)
    return parser


@dataclass
class RunConfig:
    """Everything `preedit run` needs, checked at construction (the CLI builds it: `config_from_args`).

    `outputs` are as given (one per input, or one folder); `resolve_outputs` names the files.
    `read_timeout_s=None` keeps the decoder's default; `triton_metrics_port` is the embedded
    server's Prometheus port (0: a free one); `summary_json` also writes the summary there.
    """

    inputs: List[str]
    outputs: List[str]
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    model: str = DEFAULT_MODEL
    url: Optional[str] = None
    bypass: bool = False
    device: str = "cpu"
    inflight: int = 4
    frames_per_request: int = 1
    request_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    teardown_timeout_s: float = TEARDOWN_TIMEOUT_S
    read_timeout_s: Optional[float] = None
    latency_budget_ms: Optional[float] = None
    realtime: bool = False
    metrics_port: Optional[int] = None
    triton_metrics_port: int = 0
    max_frames: Optional[int] = None
    queue_size: int = 8
    model_repository: Optional[Path] = None
    summary_json: Optional[Path] = None
    segment: Optional[Tuple[int, int]] = None
    transport: str = "shm"

    def __post_init__(self) -> None:
        if not self.inputs:
            raise UsageError("no input given: preedit run IN [IN ...] -o OUT (or --demo)")
        if self.inflight < 1:
            raise UsageError(f"--inflight must be >= 1, got {self.inflight}")
        if self.frames_per_request < 1:
            raise UsageError(f"--frames-per-request must be >= 1, got {self.frames_per_request}")
        if self.frames_per_request > 1 and (self.device != "cpu" or self.transport != "shm"):
            raise UsageError("--frames-per-request > 1 needs --device cpu and the shm transport")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"--max-frames must be >= 1, got {self.max_frames}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise UsageError(f"--metrics-port must be in 0..65535, got {self.metrics_port}")
        if self.request_timeout_s <= 0:
            raise UsageError(f"--request-timeout-s must be positive, got {self.request_timeout_s}")

    @property
    def pipeline(self) -> PipelineConfig:
        queue_size = self.queue_size
        if self.frames_per_request > 1:  # groups fill only if the queues hold every frame in flight
            queue_size = max(queue_size, self.inflight * self.frames_per_request)
        return PipelineConfig(queue_size=queue_size, latency_budget_ms=self.latency_budget_ms,
                              bypass=self.bypass)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The CLI edge: `--demo` defaults, `--deterministic`, and the encoder flags → `RunConfig`."""
    inputs, outputs = list(args.inputs), list(args.output)
    if args.demo:
        clip = clips_dir() / DEMO_CLIP
        if not clip.is_file():
            raise InputError(f"demo clip not found: {clip} (set PREEDIT_CLIPS to the clips folder)")
        inputs = inputs or [str(clip)]
        outputs = outputs or [str(REPO_ROOT / "out" / "demo.mp4")]
        Path(outputs[0]).parent.mkdir(parents=True, exist_ok=True)
    if args.deterministic and args.model not in (None, DETERMINISTIC_MODEL):
        raise UsageError(f"--deterministic uses model {DETERMINISTIC_MODEL!r}; drop --model {args.model}")
    model = DETERMINISTIC_MODEL if args.deterministic else (args.model or DEFAULT_MODEL)
    for fam, opt in PARAMS_OPTION.items():
        if fam != args.codec and getattr(args, opt.replace("-", "_")):
            raise UsageError(f"--{opt} is for --codec {fam}, not {args.codec}")
    encoder = EncoderSettings(codec=args.codec, crf=args.crf, qp=args.qp, bitrate_kbps=args.bitrate,
                              preset=args.preset, keyint=args.keyint, maxrate_kbps=args.maxrate,
                              bufsize_kbps=args.bufsize, tune=args.tune, closed_gop=args.closed_gop,
                              params=getattr(args, PARAMS_OPTION[args.codec].replace("-", "_")),
                              bit_depth=getattr(args, "bit_depth", None),
                              hls_time_s=args.hls_time, hls_list_size=args.hls_list_size)
    return RunConfig(inputs=inputs, outputs=outputs, encoder=encoder, model=model, url=args.url,
                     bypass=args.bypass, device=args.device, inflight=args.inflight,
                     frames_per_request=args.frames_per_request,
                     request_timeout_s=args.request_timeout_s, connect_timeout_s=args.connect_timeout_s,
                     teardown_timeout_s=args.teardown_timeout_s,
                     read_timeout_s=None if args.read_timeout_s == 10.0 else args.read_timeout_s,
                     latency_budget_ms=args.latency_budget_ms, realtime=args.realtime,
                     metrics_port=args.metrics_port, triton_metrics_port=args.triton_metrics_port,
                     max_frames=args.max_frames, queue_size=args.queue_size,
                     model_repository=args.model_repository, summary_json=args.summary_json,
                     segment=args.segment, transport=args.transport)


def resolve_outputs(inputs: List[str], outputs: List[str], codec: str) -> List[str]:
    """One output path per input: as given (one per input), or `<folder>/<stem>.preedit.mp4`."""
    if not outputs:
        raise UsageError("no output given: -o OUT (one per input, or a folder)")
    if len(outputs) == len(inputs) and not (len(inputs) > 1 and Path(outputs[0]).is_dir()):
        return [str(o) for o in outputs]
    if len(outputs) == 1 and (Path(outputs[0]).is_dir() or outputs[0].endswith("/")):
        folder = Path(outputs[0])
        folder.mkdir(parents=True, exist_ok=True)
        stems = [Path(i.rstrip("/")).stem or f"stream{n}" for n, i in enumerate(inputs)]
        if len(set(stems)) != len(stems):
            stems = [f"{s}_{n}" for n, s in enumerate(stems)]
        return [str(folder / f"{s}.preedit.mp4") for s in stems]
    raise UsageError(f"{len(inputs)} inputs need {len(inputs)} outputs (-o per input) or one output folder; "
                     f"got {len(outputs)} outputs")


def _check_model_in_repository(repo: Path, model: str) -> None:
    if not repo.is_dir():
        raise ModelError(f"model repository not found: {repo} (run `preedit export`, or give --url)")
    names = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    if model not in names:
        raise ModelError(f"model {model!r} not in {repo}; models there: {', '.join(names) or 'none'}")


class _Stream:
    """One input's decoder, transport, encoder and pipeline, closed together."""

    def __init__(self, src: str, dst: str) -> None:
        self.src, self.dst = src, dst
        self.decoder: Optional[Decoder] = None
        self.transport: Optional[PreEditor] = None
        self.encoder: Optional[Encoder] = None
        self.pipeline: Optional[Pipeline] = None
        self.error: Optional[BaseException] = None
        self.summary: dict = {}

    def close(self, deadline: Optional[float] = None) -> None:
        """Close transport, decoder and encoder; the transport gets until `deadline` (monotonic)."""
        if self.transport is not None:
            with contextlib.suppress(Exception):
                if deadline is None:
                    self.transport.close()
                else:
                    self.transport.close(max(0.0, deadline - time.monotonic()))
        if self.decoder is not None:
            with contextlib.suppress(Exception):
                self.decoder.close()
        if self.encoder is not None:
            with contextlib.suppress(Exception):
                self.encoder.finish()


# -- build / serve / run / report ---------------------------------------------------------------
def plan_streams(cfg: RunConfig) -> List[_Stream]:
    """One `_Stream` per input with its checked output path (nothing opened yet)."""
    dsts = resolve_outputs(cfg.inputs, cfg.outputs, cfg.encoder.codec)
    for dst in dsts:
        container_for(dst, cfg.encoder.codec)
    check_run(cfg, dsts)  # numbers, collisions (device+inode), duplicates, writable folders
    scale_out.check_run_args(cfg, cfg.inputs, dsts)
    return [_Stream(src, dst) for src, dst in zip(cfg.inputs, dsts)]


def open_decoders(cfg: RunConfig, backends: Backends, streams: List[_Stream]) -> None:
    """Open every input first, so bad input fails before a server starts."""
    kw: dict = dict(realtime=cfg.realtime, max_frames=cfg.max_frames)
    if cfg.read_timeout_s is not None:
        kw["open_timeout_s"] = cfg.read_timeout_s
    for s in streams:
        if cfg.segment is not None:
            s.decoder = scale_out.make_decoder(s.src, cfg.segment, gop=scale_out.gop_grid(cfg.encoder), **kw)
        else:
            s.decoder = backends.make_decoder(s.src, **kw)


def start_server(cfg: RunConfig) -> Tuple[Optional[TritonServer], Optional[str]]:
    """(embedded server or None, gRPC URL): the given `--url`, none in bypass mode, else a started server."""
    if cfg.bypass or cfg.url is not None:
        return None, cfg.url
    repo = cfg.model_repository or model_repository()
    _check_model_in_repository(repo, cfg.model)
    server = TritonServer(ServerConfig(model_repository=repo, http_port=0, grpc_port=0,
                                       metrics_port=cfg.triton_metrics_port, models=(cfg.model,)))
    try:
        server.start()
        server.wait_model_ready(cfg.model)
    except BaseException:
        server.stop()
        raise
    log.info("embedded Triton: gRPC %s, metrics %s", server.grpc_url, server.metrics_url)
    return server, server.grpc_url


def build_pipelines(cfg: RunConfig, backends: Backends, streams: List[_Stream], url: Optional[str]) -> None:
    """Transport (unless bypass), encoder and pipeline for every opened stream."""
    for s in streams:
        info = s.decoder.info
        qp = model_qp(cfg.encoder, info)
        if not cfg.bypass:
            s.transport = scale_out.make_transport(cfg, backends, url, cfg.model, (info.height * 3 // 2, info.width),
                                                   n_slots=cfg.inflight, qp=qp,
                                                   **({"frames_per_request": cfg.frames_per_request}
                                                      if cfg.frames_per_request > 1 else {}),
                                                   request_timeout_s=cfg.request_timeout_s,
                                                   connect_timeout_s=cfg.connect_timeout_s,
                                                   headers=auth_headers(url))  # key of a locked server
        s.encoder = backends.make_encoder(s.dst, info, cfg.encoder, audio_streams=s.decoder.audio_streams,
                                          sample_aspect_ratio=s.decoder.sample_aspect_ratio)
        follow_encoder_qp(cfg.encoder, info, s.encoder, s.transport)
        if cfg.segment is not None:
            scale_out.prepare_encoder(s.encoder)
        s.pipeline = Pipeline(s.decoder, s.transport, s.encoder, cfg.pipeline, RunStats())
    if streams:
        log.info("threads: %s", threads_report(cfg, streams[0].transport))


def follow_encoder_qp(settings: EncoderSettings, info, encoder, transport) -> None:
    """With `--bitrate`, the model's QP hint follows the QP the encoder reports (`QpFollower`): every
    GOP (`--keyint`, else 2 s of frames) the transport is given the new hint for the frames after it.
    CRF / QP runs keep their exact hint; encoders or transports without the hooks (NVENC, CUDA shm)
    keep the bits-per-pixel estimate."""
    if (transport is None or settings.bitrate_kbps is None or not hasattr(transport, "set_qp")
            or not hasattr(encoder, "follow_qp")):
        return
    fps = float(info.average_rate) if info.average_rate else 25.0
    encoder.follow_qp(QpFollower(settings, info), transport.set_qp, settings.keyint or max(1, round(2.0 * fps)))


def threads_report(cfg: RunConfig, transport) -> str:
    """What shares the cores (issue 14): decoder threads (FFmpeg slice threads only below
    `FRAME_THREADS_MIN_CORES`, else frame + slice), encoder threads as the library picks them
    (x264/x265/SVT-AV1 auto), and how the server runs the model."""
    cores = usable_cores()
    served = "none (bypass)"
    if transport is not None:
        shape = getattr(transport, "served_shape", None)
        served = shape() if callable(shape) else type(transport).__name__
    return (f"{cores} core(s): decoder FFmpeg {decoder_thread_type(cores).lower()} threads, encoder {cfg.encoder.codec} library auto threads, "
            f"server model {cfg.model}: {served}")


def attach_progress(streams: List[_Stream], max_frames: Optional[int], is_tty: Optional[bool] = None) -> list:
    """One frame bar per stream (drawn only when stderr is a terminal), fed by the encoder thread."""
    bars = []
    for n, s in enumerate(streams):
        total = s.decoder.info.frame_count_hint
        if total is not None and max_frames is not None:
            total = min(total, max_frames)
        bar = progress_bar(total, Path(s.src).name or s.src, is_tty=is_tty, position=n if len(streams) > 1 else None)
        s.pipeline.stats.on_frame = lambda _n, bar=bar: bar.update(1)
        bars.append(bar)
    return bars


def _run_one(stream: _Stream) -> None:
    try:
        stream.pipeline.run()
    except BaseException as exc:  # noqa: BLE001 - re-raised by the caller after every stream ended
        stream.error = exc


def run_streams(streams: List[_Stream]) -> None:
    """Run every pipeline (one thread each when several); errors are kept on each stream."""
    if len(streams) == 1:
        _run_one(streams[0])
        return
    threads = [threading.Thread(target=_run_one, args=(s,), daemon=True) for s in streams]

    def stop_all() -> None:
        for s in streams:
            s.pipeline.stop.set()

    run_threads(threads, on_interrupt=stop_all)


def report(cfg: RunConfig, backends: Backends, streams: List[_Stream], echo: bool = True) -> List[dict]:
    """Print each stream's summary (and the aggregate; not when `echo` is False), write `--summary-json`; returns the summaries."""
    summaries = []
    for s in streams:
        s.summary = s.pipeline.stats.summary(
            input=s.src, output=s.dst, codec=cfg.encoder.codec, model=None if cfg.bypass else cfg.model,
            device=backends.device, stage_devices=dict(backends.stage_devices), bypass=cfg.bypass,
            latency_budget_ms=cfg.latency_budget_ms, error=None if s.error is None else str(s.error))
        follower = getattr(s.encoder, "qp_follower", None)
        if follower is not None:  # --bitrate: the hint per GOP, [first frame, model QP]
            s.summary["model_qp_hints"] = [[0, round(follower.start, 2)]] + [[f, round(q, 2)] for f, q in follower.history]
        summaries.append(s.summary)
        if echo:
            print(format_summary(s.summary), flush=True)
    if len(streams) > 1 and echo:
        total_frames = sum(x["frames"] for x in summaries)
        wall = max(x["wall_s"] for x in summaries) or 1e-9
        print(f"{len(streams)} streams: {total_frames} frames, {total_frames / wall:.1f} fps aggregate", flush=True)
    if cfg.summary_json:
        payload = summaries[0] if len(summaries) == 1 else {"streams": summaries}
        cfg.summary_json.write_text(json.dumps(payload, indent=2))
    return summaries


def _raise_first_error(streams: List[_Stream]) -> None:
    for s in streams:
        if isinstance(s.error, PreeditError):
            s.close()  # finalise now, so the message says what is on disk
            raise type(s.error)(f"{s.error}; {partial_output_note(s.dst)}")
        if s.error is not None:
            raise s.error


def _finish_segments(cfg: RunConfig, streams: List[_Stream]) -> None:
    for s in streams:
        scale_out.finish_run(cfg, s)


def run(cfg: RunConfig) -> int:
    """Build, serve, run and report one `preedit run`; every stream's output is finalised on any exit."""
    streams = plan_streams(cfg)
    backends = select_backends(cfg.device, output_codec=cfg.encoder.codec)
    server = metrics_server = None
    bars: list = []
    try:
        if cfg.metrics_port is not None:
            metrics_server, port = serve_metrics(cfg.metrics_port)
            log.info("client metrics on http://127.0.0.1:%d/metrics", port)
        open_decoders(cfg, backends, streams)
        server, url = start_server(cfg)
        build_pipelines(cfg, backends, streams, url)
        bars = attach_progress(streams, cfg.max_frames)
        run_streams(streams)
        for bar in bars:
            bar.close()
        report(cfg, backends, streams)
        _raise_first_error(streams)
        _finish_segments(cfg, streams)
        return 0
    finally:
        for bar in bars:
            bar.close()
        teardown(streams, server, cfg.teardown_timeout_s)
        if metrics_server is not None:
            with contextlib.suppress(Exception):
                metrics_server.shutdown()


def teardown(streams: List[_Stream], server: Optional[TritonServer], timeout_s: float) -> float:
    """Close every stream and stop the embedded server within `timeout_s` in all; returns the seconds taken.

    The transports share one deadline (in-flight requests, then shm unregistration; a frozen server
    costs the wait, not more); the server gets what is left for a graceful exit (at least 0.5 s),
    then SIGKILL (a frozen one at once). Encoders finish locally whatever the server does."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    for s in streams:
        s.close(deadline)
    if server is not None:
        server.stop(timeout_s=max(0.5, deadline - time.monotonic()))
    took = time.monotonic() - t0
    log.info("teardown took %.2f s (bound %.1f s)", took, timeout_s)
    return took


def main(argv: Optional[List[str]] = None) -> int:
    parser = setup_args(argparse.ArgumentParser(prog="preedit run", description=__doc__.split("\n")[0],
                                                formatter_class=HelpFormatter))
    args = parser.parse_args(argv)
    if args.workers is not None:
        return run_workers(args)
    return run(config_from_args(args))
