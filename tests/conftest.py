"""Shared test configuration: markers, GPU skip policy, real clips, RNG-leak guard."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from preedit.paths import clips_dir
from preedit.sched import forbid_realtime

# Tests run as root here: SVT-AV1 would put the suite's encoder threads on SCHED_FIFO 99 (and
# starve the Triton servers the same tests start). Before any thread exists, as the CLI does; the
# bounding set is kept so test_sched.py can show that a child without the guard does go real-time.
forbid_realtime(children=False)

CLIPS = clips_dir()


def cuda_available() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    if os.environ.get("FAIL_WITHOUT_CUDA") == "1":
        return  # needs_cuda tests run and fail loudly
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (no CUDA device here); FAIL_WITHOUT_CUDA=1 makes this fail")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def clip():
    """Path to a real clip from ../shared/data/clips by file name (skips if the set is absent)."""

    def _get(name: str) -> Path:
        path = CLIPS / name
        if not path.is_file():
            pytest.skip(f"shared clip {name} not found under {CLIPS}")
        return path

    return _get


@pytest.fixture(scope="session")
def identity_repo(tmp_path_factory):
    """A model repository serving the identity pre-editor as `preedit` (output == input, bit for bit)."""
    from preedit.export import export_model_repository
    from preedit.network import identity_model

    root = tmp_path_factory.mktemp("idrepo")
    export_model_repository(identity_model(), root, "preedit")
    return root


@pytest.fixture(autouse=True)
def _rng_leak_guard():
    """Tests must not change the global RNG state other tests see."""
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    yield
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)
