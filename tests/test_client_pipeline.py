"""Client pipeline with fake stages: ordering, bypass, latency budget, error paths, shm ring."""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import Future
from fractions import Fraction

import numpy as np
import pytest

from preedit.client.interfaces import Frame, StreamInfo
from preedit.client.pipeline import Pipeline, PipelineConfig
from preedit.client.transport import SlotRing, sweep_stale_regions
from preedit.errors import ServerError, StreamError, UsageError

H, W = 8, 12
TB = Fraction(1, 1000)


class FakeDecoder:
    """Frames with pts 0, 33, 66, ... whose pixels all equal their index; optional failure."""

    def __init__(self, n: int, fail_after: int = None, fps: float = 0.0) -> None:
        self.n, self.fail_after, self.fps = n, fail_after, fps
        self.closed = False

    def __iter__(self):
        t0 = time.monotonic()
        for i in range(self.n):
            if self.fail_after is not None and i == self.fail_after:
                raise StreamError(f"input stream broke after {i} frames: fake")
            if self.fps:
                time.sleep(max(0.0, t0 + i / self.fps - time.monotonic()))
            nv12 = np.full((H * 3 // 2, W), i % 200, np.uint8)
            yield Frame(index=i, pts=i * 33, time_base=TB, nv12=nv12, t_decoded_ns=time.perf_counter_ns(),
                        meta={"decode_ns": 1000, "audio": [f"a{i}"]})

    def take_audio(self):
        return ["tail"]

    def close(self):
        self.closed = True


class FakeEncoder:
    info = StreamInfo(width=W, height=H, time_base=TB, average_rate=None)
    first_pts = last_end_pts = None

    def __init__(self) -> None:
        self.frames = []
        self.audio = []
        self.finished = 0
        self.bits = 0

    def encode(self, frame):
        self.frames.append((frame.index, frame.pts, int(frame.nv12[0, 0]), frame.bypassed))
        self.bits += 8

    def mux_audio(self, packets):
        self.audio.extend(packets)

    def finish(self):
        self.finished += 1
        return {"output_bits": self.bits}


class FakePreEditor:
    """Adds 50 to every pixel after a random (or fixed) delay, answering out of order."""

    def __init__(self, delay_s=(0.0, 0.02), slots: int = 4, fail_at: int = None, seed: int = 0) -> None:
        self.delay_s = delay_s
        self.sem = threading.Semaphore(slots)
        self.rng = random.Random(seed)
        self.fail_at = fail_at
        self.sent = 0

    def submit(self, nv12, timeout_s=None):
        if not self.sem.acquire(timeout=timeout_s if timeout_s is None or timeout_s > 0 else 0):
            return None
        fut: Future = Future()
        delay = self.rng.uniform(*self.delay_s)
        n = self.sent
        self.sent += 1

        def done():
            time.sleep(delay)
            self.sem.release()
            if self.fail_at is not None and n >= self.fail_at:
                fut.set_exception(ServerError("Triton at fake failed on model 'x' after 3 attempt(s): gone"))
            else:
                fut.set_result(nv12 + 50)

        threading.Thread(target=done, daemon=True).start()
        return fut


def test_pipeline_keeps_order_timestamps_and_count_when_results_arrive_out_of_order():
    enc = FakeEncoder()
    stats = Pipeline(FakeDecoder(40), FakePreEditor(delay_s=(0.0, 0.03), slots=6), enc, PipelineConfig(queue_size=4)).run()
    assert [f[0] for f in enc.frames] == list(range(40))
    assert [f[1] for f in enc.frames] == [i * 33 for i in range(40)]
    assert [f[2] for f in enc.frames] == [(i % 200) + 50 for i in range(40)]  # every frame edited
    assert stats.frames_encoded == 40 and sum(stats.bypassed.values()) == 0
    assert enc.audio == [f"a{i}" for i in range(40)] + ["tail"]  # audio kept in demux order
    assert enc.finished == 1
    assert len(stats.latencies_s["preedit"]) == 40


def test_pipeline_encodes_original_frames_when_bypass_flag_set():
    enc = FakeEncoder()
    stats = Pipeline(FakeDecoder(10), None, enc, PipelineConfig(bypass=True)).run()
    assert [f[2] for f in enc.frames] == list(range(10))
    assert all(f[3] for f in enc.frames)
    assert stats.bypassed["flag"] == 10


def test_pipeline_bypasses_late_frames_and_keeps_real_time_when_budget_is_missed():
    enc = FakeEncoder()
    n, fps = 30, 60.0
    t0 = time.monotonic()
    stats = Pipeline(FakeDecoder(n, fps=fps), FakePreEditor(delay_s=(0.15, 0.15), slots=2), enc,
                     PipelineConfig(latency_budget_ms=40)).run()
    wall = time.monotonic() - t0
    assert [f[0] for f in enc.frames] == list(range(n))
    assert [f[1] for f in enc.frames] == [i * 33 for i in range(n)]
    assert stats.bypassed["budget"] > 0
    bypassed = [f for f in enc.frames if f[3]]
    assert all(f[2] == f[0] % 200 for f in bypassed)  # bypassed frames are the originals
    assert wall < n / fps + 0.04 + 0.5  # input duration + budget + scheduling slack: no stall


def test_pipeline_edits_every_frame_when_budget_is_generous():
    enc = FakeEncoder()
    stats = Pipeline(FakeDecoder(12), FakePreEditor(delay_s=(0.0, 0.005)), enc,
                     PipelineConfig(latency_budget_ms=5000)).run()
    assert stats.bypassed["budget"] == 0
    assert [f[2] for f in enc.frames] == [i + 50 for i in range(12)]


def test_pipeline_raises_and_finalises_when_server_fails_mid_stream():
    enc = FakeEncoder()
    with pytest.raises(ServerError, match="after 3 attempt"):
        Pipeline(FakeDecoder(50), FakePreEditor(fail_at=10, slots=2), enc, PipelineConfig()).run()
    assert enc.finished == 1
    assert 0 < len(enc.frames) <= 10
    assert [f[0] for f in enc.frames] == list(range(len(enc.frames)))


def test_pipeline_encodes_decoded_frames_then_raises_when_input_breaks():
    enc = FakeEncoder()
    with pytest.raises(StreamError, match="after 7 frames"):
        Pipeline(FakeDecoder(20, fail_after=7), FakePreEditor(), enc, PipelineConfig()).run()
    assert [f[0] for f in enc.frames] == list(range(7))
    assert enc.finished == 1


def test_pipeline_config_rejects_nonpositive_budget_when_given():
    with pytest.raises(UsageError, match="latency-budget"):
        PipelineConfig(latency_budget_ms=0)


def test_slot_ring_reuses_released_slot_when_ring_is_full():
    ring = SlotRing(2, frame_bytes=H * 3 // 2 * W)
    try:
        names = [s.inp.name for s in ring.slots] + [s.out.name for s in ring.slots]
        assert all(os.path.exists(f"/dev/shm/{n}") for n in names)
        a, b = ring.acquire(0.1), ring.acquire(0.1)
        assert {a.index, b.index} == {0, 1}
        assert ring.acquire(0.05) is None  # full: no third slot
        a.frame_in((H * 3 // 2, W))[...] = 7
        a.qp_in()[...] = 30.0
        ring.release(a)
        again = ring.acquire(0.1)
        assert again.index == a.index
        assert int(again.frame_in((H * 3 // 2, W))[5, 5]) == 7 and float(again.qp_in()[0, 0]) == 30.0
    finally:
        ring.destroy()
    assert not any(os.path.exists(f"/dev/shm/{n}") for n in names)


def test_sweep_stale_regions_removes_only_dead_owners_when_called(tmp_path):
    dead_pid = 4_000_000  # above any pid_max: no such process
    stale = tmp_path / f"preedit_{dead_pid}_0123abcd_in0"
    live = tmp_path / f"preedit_{os.getpid()}_0123abcd_out1"
    other = tmp_path / "NV12_IN_0_0"
    for p in (stale, live, other):
        p.write_bytes(b"x")
    assert sweep_stale_regions(shm_dir=str(tmp_path)) == [stale.name]
    assert not stale.exists() and live.exists() and other.exists()
