"""Every Prometheus metric the client exports, declared once, with unit suffixes and fixed labels.

```
 preedit_client_frames_total{stage}                 decoded | preedited | bypassed | encoded
 preedit_client_stage_latency_seconds{stage}        decode | preedit | encode | end_to_end (histogram)
 preedit_client_fps                                 frames encoded per second, whole run so far
 preedit_client_output_bits_total                   bits of encoded video written
 preedit_client_bypassed_frames_total{reason}       budget | error | flag
 preedit_client_errors_total{kind}                  input | stream | server | encode | timeout
 preedit_client_inflight_requests                   frames sent to Triton, not yet answered
```
`serve_metrics(port)` exposes them on 127.0.0.1 (`preedit run --metrics-port`). Triton's own
metrics (queue and compute time, batch sizes) are served by Triton on its metrics port.
"""

from __future__ import annotations

from typing import Optional, Tuple

from prometheus_client import Counter, Gauge, Histogram, start_http_server

FRAME_STAGES = ("decoded", "preedited", "bypassed", "encoded")
LATENCY_STAGES = ("decode", "preedit", "encode", "end_to_end")
BYPASS_REASONS = ("budget", "error", "flag")
ERROR_KINDS = ("input", "stream", "server", "encode", "timeout")

# Latency buckets from 1 ms to 10 s: a frame at 60 fps is 16.7 ms, live budgets are 20-500 ms.
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                      1.0, 2.5, 5.0, 10.0)

FRAMES = Counter("preedit_client_frames_total", "Frames that passed each pipeline stage", ["stage"])
STAGE_LATENCY = Histogram("preedit_client_stage_latency_seconds",
                          "Per-frame latency of each pipeline stage (preedit = Triton round trip "
                          "including queueing; end_to_end = decoded to encoded)",
                          ["stage"], buckets=_LATENCY_BUCKETS_S)
FPS = Gauge("preedit_client_fps", "Frames encoded per second since the run started")
OUTPUT_BITS = Counter("preedit_client_output_bits_total", "Bits of encoded video written")
BYPASSED = Counter("preedit_client_bypassed_frames_total",
                   "Frames encoded without pre-editing", ["reason"])
ERRORS = Counter("preedit_client_errors_total", "Errors by kind", ["kind"])
INFLIGHT = Gauge("preedit_client_inflight_requests",
                 "Pre-edit frames in flight to Triton (one per request unless --frames-per-request)")

# Touch every label value so each series exists (with 0) from the first scrape.
for _s in FRAME_STAGES:
    FRAMES.labels(stage=_s)
for _s in LATENCY_STAGES:
    STAGE_LATENCY.labels(stage=_s)
for _r in BYPASS_REASONS:
    BYPASSED.labels(reason=_r)
for _k in ERROR_KINDS:
    ERRORS.labels(kind=_k)

METRIC_NAMES = ("preedit_client_frames_total", "preedit_client_stage_latency_seconds",
                "preedit_client_fps", "preedit_client_output_bits_total",
                "preedit_client_bypassed_frames_total", "preedit_client_errors_total",
                "preedit_client_inflight_requests")


def count_frame(stage: str) -> None:
    FRAMES.labels(stage=stage).inc()


def observe_latency(stage: str, seconds: float) -> None:
    STAGE_LATENCY.labels(stage=stage).observe(seconds)


def count_bypass(reason: str) -> None:
    BYPASSED.labels(reason=reason).inc()
    FRAMES.labels(stage="bypassed").inc()


def count_error(kind: str) -> None:
    ERRORS.labels(kind=kind if kind in ERROR_KINDS else "stream").inc()


def serve_metrics(port: int, host: str = "127.0.0.1") -> Tuple[Optional[object], int]:
    """Serve the default registry on `host:port` (0 picks a free port).

    Returns:
        (server, port): call `server.shutdown()` to stop it.
    """
    server, _thread = start_http_server(port, addr=host)
    return server, server.server_address[1]
