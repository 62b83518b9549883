"""The three-stage pipeline: decode → pre-edit (several requests in flight) → encode.

```
 decode thread ──q_decoded──> submit thread ──q_inflight──> collect thread ──q_edited──> encode thread
   Decoder                     PreEditor.submit              waits each Future            Encoder.encode
   (Frame, audio)              (slot ring, async)            in frame order;              (pts kept,
                                                             budget miss → bypass          audio muxed)
```
Queues are bounded, so a slow stage back-pressures the ones before it. Futures are collected in
submission (= frame) order, so output order, timestamps and frame count match the input whatever
order Triton answers in. With a latency budget, a frame whose round trip (queueing included)
would end after `t_decoded + budget` is encoded unedited and counted as bypassed.

Errors: a broken input drains what was decoded and then reports `StreamError`; a server or
encoder failure and Ctrl-C stop at once. In every case the encoder writes its trailer, so the
output written so far is playable.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable, List, Optional

from preedit.client import telemetry
from preedit.client.interfaces import Decoder, Encoder, PreEditor
from preedit.client.stats import RunStats
from preedit.errors import PreeditError, UsageError

log = logging.getLogger(__name__)

_POLL_S = 0.1


@dataclass(frozen=True)
class _End:
    """End of stream marker; carries audio demuxed after the last video frame."""

    audio: tuple = ()


@dataclass
class PipelineConfig:
    """Pipeline knobs.

    Args:
        queue_size: frames each inter-stage queue holds.
        latency_budget_ms: per-frame pre-edit deadline after decode (None: wait for every frame).
        bypass: encode every frame unedited (A/B reference); no requests are sent.
    """

    queue_size: int = 8
    latency_budget_ms: Optional[float] = None
    bypass: bool = False

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise UsageError(f"queue size must be >= 1, got {self.queue_size}")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise UsageError(f"--latency-budget-ms must be positive, got {self.latency_budget_ms}")


class Pipeline:
    """Run one stream through `decoder` → `preeditor` → `encoder` (see module docstring).

    Args:
        decoder: the `Decoder` (CPU or GPU).
        preeditor: the `PreEditor` transport; None in bypass mode.
        encoder: the `Encoder` (CPU or GPU).
    """

    def __init__(self, decoder: Decoder, preeditor: Optional[PreEditor], encoder: Encoder, config: PipelineConfig,
                 stats: Optional[RunStats] = None) -> None:
        if preeditor is None and not config.bypass:
            raise UsageError("a pre-editor is needed unless bypass is set")
        self.decoder = decoder
        self.preeditor = preeditor
        self.encoder = encoder
        self.config = config
        self.stats = stats or RunStats()
        self.stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._error_lock = threading.Lock()
        n = config.queue_size
        self.q_decoded: queue.Queue = queue.Queue(n)
        self.q_inflight: queue.Queue = queue.Queue(n)
        self.q_edited: queue.Queue = queue.Queue(n)
        self._budget_ns = None if config.latency_budget_ms is None else int(config.latency_budget_ms * 1e6)
        self._t_start = 0.0
        self.encoder_result: dict = {}

    # -- helpers -----------------------------------------------------------------------------
    def _fail(self, exc: BaseException, kind: str, stop: bool = True) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = exc
                telemetry.count_error(kind)
        if stop:
            self.stop.set()

    def _put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return None

    # -- stages ------------------------------------------------------------------------------
    def _decode(self) -> None:
        end = _End()
        try:
            for frame in self.decoder:
                self.stats.frames_decoded += 1
                telemetry.count_frame("decoded")
                decode_s = frame.meta.get("decode_ns", 0) / 1e9
                self.stats.add("decode", decode_s)
                telemetry.observe_latency("decode", decode_s)
                if not self._put(self.q_decoded, frame):
                    return
            end = _End(tuple(self.decoder.take_audio()))
        except PreeditError as exc:
            self._fail(exc, "stream", stop=False)  # drain what was decoded, then report
        except Exception as exc:  # noqa: BLE001 - unexpected: stop, report after finalising
            self._fail(exc, "stream")
        finally:
            self._put(self.q_decoded, end)

    def _submit(self) -> None:
        try:
            while True:
                frame = self._get(self.q_decoded)
                if frame is None:
                    return
                if isinstance(frame, _End):
                    self._put(self.q_inflight, (frame, None, 0, None))
                    return
                t0 = time.perf_counter_ns()
                if self.config.bypass:
                    self._put(self.q_inflight, (frame, None, t0, "flag"))
                    continue
                fut, reason = self._send(frame)
                if not self._put(self.q_inflight, (frame, fut, t0, reason)):
                    return
        except PreeditError as exc:
            self._fail(exc, "server")
        except Exception as exc:  # noqa: BLE001
            self._fail(exc, "server")

    def _send(self, frame):
        if self._budget_ns is None:
            while not self.stop.is_set():
                fut = self.preeditor.submit(frame.nv12, timeout_s=_POLL_S * 5)
                if fut is not None:
                    return fut, None
            return None, "error"
        remaining_s = (frame.t_decoded_ns + self._budget_ns - time.perf_counter_ns()) / 1e9
        if remaining_s <= 0:
            return None, "budget"
        fut = self.preeditor.submit(frame.nv12, timeout_s=remaining_s)
        return (fut, None) if fut is not None else (None, "budget")

    def _collect(self) -> None:
        try:
            while True:
                item = self._get(self.q_inflight)
                if item is None:
                    return
                frame, fut, t0, reason = item
                if isinstance(frame, _End):
                    self._put(self.q_edited, frame)
                    return
                if fut is not None:
                    edited, reason = self._wait(frame, fut)
                    if edited is not None:
                        rt_s = (time.perf_counter_ns() - t0) / 1e9
                        self.stats.add("preedit", rt_s)
                        telemetry.observe_latency("preedit", rt_s)
                        telemetry.count_frame("preedited")
                        frame.nv12 = edited
                if reason is not None:
                    if self.stop.is_set():
                        return
                    frame.bypassed = True
                    self.stats.bypassed[reason] += 1
                    telemetry.count_bypass(reason)
                if not self._put(self.q_edited, frame):
                    return
        except PreeditError as exc:
            self._fail(exc, "server")
        except Exception as exc:  # noqa: BLE001
            self._fail(exc, "server")

    def _wait(self, frame, fut):
        """(edited NV12 or None, bypass reason or None); raises the transport's error."""
        if self._budget_ns is None:
            while True:
                try:
                    edited = fut.result(timeout=_POLL_S)
                    return (edited, None) if edited is not None else (None, "error")
                except FutureTimeout:
                    if self.stop.is_set():
                        return None, "error"
        if not fut.done():
            remaining_s = (frame.t_decoded_ns + self._budget_ns - time.perf_counter_ns()) / 1e9
            try:
                fut.result(timeout=max(remaining_s, 0.0))
            except FutureTimeout:
                return None, "budget"
        edited = fut.result()
        return (edited, None) if edited is not None else (None, "error")

    def _encode(self) -> None:
        try:
            while True:
                frame = self._get(self.q_edited)
                if frame is None:
                    return
                if isinstance(frame, _End):
                    self.encoder.mux_audio(list(frame.audio))
                    return
                audio = frame.meta.pop("audio", None)
                if audio:
                    self.encoder.mux_audio(audio)
                t0 = time.perf_counter_ns()
                self.encoder.encode(frame)
                t1 = time.perf_counter_ns()
                self.stats.add("encode", (t1 - t0) / 1e9)
                self.stats.add("end_to_end", (t1 - frame.t_decoded_ns) / 1e9)
                telemetry.observe_latency("encode", (t1 - t0) / 1e9)
                telemetry.observe_latency("end_to_end", (t1 - frame.t_decoded_ns) / 1e9)
                self.stats.frames_encoded += 1
                telemetry.count_frame("encoded")
                if self.stats.on_frame is not None:
                    self.stats.on_frame(self.stats.frames_encoded)
                elapsed = time.monotonic() - self._t_start
                if elapsed > 0:
                    telemetry.FPS.set(self.stats.frames_encoded / elapsed)
        except PreeditError as exc:
            self._fail(exc, "encode")
        except Exception as exc:  # noqa: BLE001
            self._fail(exc, "encode")
        finally:
            self._finish_encoder()

    def _finish_encoder(self) -> None:
        try:
            self.encoder_result = self.encoder.finish() or {}
            bits = int(self.encoder_result.get("output_bits", 0))
            telemetry.OUTPUT_BITS.inc(max(bits, 0))
            self.stats.output_bits = bits
        except Exception as exc:  # noqa: BLE001
            self._fail(exc, "encode")

    # -- driver ------------------------------------------------------------------------------
    def run(self) -> RunStats:
        """Run to the end of the input; raises the first error after the output is finalised."""
        self._t_start = time.monotonic()
        cpu0 = time.process_time()
        threads: List[threading.Thread] = [
            threading.Thread(target=fn, name=f"preedit-{fn.__name__.strip('_')}", daemon=True)
            for fn in (self._decode, self._submit, self._collect, self._encode)
        ]
        try:
            run_threads(threads, on_interrupt=self.stop.set)
        finally:
            self.stats.wall_s = time.monotonic() - self._t_start
            self.stats.cpu_s = time.process_time() - cpu0
            self.stats.media_duration_s = _media_duration_s(self.encoder, self.stats.frames_encoded)
        if self._error is not None:
            raise self._error
        return self.stats


def run_threads(threads: List[threading.Thread], on_interrupt: Callable[[], None]) -> None:
    """Start `threads` and wait for all; on Ctrl-C call `on_interrupt`, let them finish (30 s each), re-raise.

    Joins in short slices so the main thread sees KeyboardInterrupt while it waits.
    """
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.2)
    except KeyboardInterrupt:
        on_interrupt()
        for t in threads:
            t.join(timeout=30.0)
        raise


def _media_duration_s(encoder: Encoder, frames: int) -> float:
    info, first, end = encoder.info, encoder.first_pts, encoder.last_end_pts
    if first is not None and end is not None and end > first:
        return float((end - first) * info.time_base)
    return float(frames / info.average_rate) if info.average_rate else 0.0
