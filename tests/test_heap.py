"""`preedit.heap`: frame-sized buffers come back from the heap without faulting their pages in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from preedit.heap import SERVER_ENV, server_env

PROBE = r"""
import resource, sys
import numpy as np
from preedit.heap import reuse_large_buffers
tuned = reuse_large_buffers()
frame = 1280 * 720 * 3 // 2
for _ in range(5):  # warm up
    a = np.empty(frame, np.uint8); a[:] = 1; b = np.empty(frame, np.uint8); b[:] = 2; del a, b
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):  # what a pipeline does every frame: fresh frame-sized arrays, written, freed
    a = np.empty(frame, np.uint8); a[:] = 1; b = np.empty(frame, np.uint8); b[:] = 2; del a, b
print(int(tuned), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50)
"""


def _probe(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    tuned, faults = out.split()
    return tuned == "1", float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tunables are Linux-only")
def test_tuned_heap_reuses_frame_buffers_without_page_faults():
    tuned, faults = _probe({})
    assert tuned and faults < 20  # the same heap pages every frame
    # glibc's behaviour the tuning avoids: with the thresholds at a small fixed value (what a trimmed
    # heap or an mmap threshold below a frame gives), every 1.4 MB array faults its ~340 pages in again
    untuned, faults_default = _probe({"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"})
    assert not untuned and faults_default > 300


def test_server_env_adds_the_thresholds_but_keeps_values_given():
    assert server_env({"A": "1"}) == {"A": "1", **SERVER_ENV}
    assert server_env({"MALLOC_MMAP_THRESHOLD_": "5"})["MALLOC_MMAP_THRESHOLD_"] == "5"
