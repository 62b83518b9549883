"""Per-run latency records and the final summary (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from preedit.client.telemetry import LATENCY_STAGES


def percentile_ms(samples_s: List[float], q: float) -> Optional[float]:
    """The `q`-th percentile (0..100) of latencies in seconds, in milliseconds (None if empty)."""
    if not samples_s:
        return None
    return float(np.percentile(np.asarray(samples_s, dtype=np.float64), q) * 1e3)


@dataclass
class RunStats:
    """What one stream's run measured; thread-safe enough for one writer per stage."""

    latencies_s: Dict[str, List[float]] = field(default_factory=lambda: {s: [] for s in LATENCY_STAGES})
    frames_decoded: int = 0
    frames_encoded: int = 0
    bypassed: Dict[str, int] = field(default_factory=lambda: {"budget": 0, "error": 0, "flag": 0})
    output_bits: int = 0
    media_duration_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0  # CPU seconds of the whole process (all threads) while the pipeline ran
    on_frame: Optional[Callable[[int], None]] = None  # called with frames_encoded after each frame (API progress)

    def add(self, stage: str, seconds: float) -> None:
        self.latencies_s[stage].append(seconds)

    def summary(self, **extra) -> dict:
        """A JSON-ready summary: frames, fps, per-stage p50/p99 in ms, bitrate, bypassed frames."""
        fps = self.frames_encoded / self.wall_s if self.wall_s > 0 else 0.0
        bitrate_kbps = (self.output_bits / self.media_duration_s / 1e3) if self.media_duration_s > 0 else None
        latency = {
            stage: {"p50_ms": percentile_ms(vals, 50), "p99_ms": percentile_ms(vals, 99), "count": len(vals)}
            for stage, vals in self.latencies_s.items()
        }
        out = {
            "frames": self.frames_encoded,
            "frames_decoded": self.frames_decoded,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "fps": round(fps, 2),
            "latency_ms": latency,
            "output_bits": self.output_bits,
            "output_bitrate_kbps": None if bitrate_kbps is None else round(bitrate_kbps, 1),
            "media_duration_s": round(self.media_duration_s, 3),
            "bypassed_frames": sum(self.bypassed.values()),
            "bypassed_by_reason": dict(self.bypassed),
        }
        out.update(extra)
        return out


def format_summary(summary: dict) -> str:
    """Human-readable multi-line summary of `RunStats.summary()`."""

    def _ms(v: Optional[float]) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [
        f"{summary.get('input', '')} -> {summary.get('output', '')}",
        f"  frames {summary['frames']} (decoded {summary['frames_decoded']}), {summary['wall_s']:.2f} s, "
        f"{summary['fps']:.1f} fps, bypassed {summary['bypassed_frames']} {summary['bypassed_by_reason']}",
        "  latency ms       p50      p99",
    ]
    for stage, vals in summary["latency_ms"].items():
        lines.append(f"    {stage:<12} {_ms(vals['p50_ms']):>7}  {_ms(vals['p99_ms']):>7}")
    rate = summary.get("output_bitrate_kbps")
    lines.append(f"  output video {summary['output_bits'] / 8e3:.1f} kB, "
                 f"{'-' if rate is None else f'{rate:.1f}'} kbit/s over {summary['media_duration_s']:.2f} s")
    return "\n".join(lines)
