"""Issue 18 row 7: `pip install -e '.[gpu-client]'` must give a CUDA-shm client that imports.

tritonclient 2.51.0's CUDA-shm module needs `cuda.cudart` (cuda-python < 13) and `pkg_resources`
(setuptools < 81); the extra pins versions that still have both (verified by installing them in a
throwaway venv on a CPU host: the import succeeds and `doctor`'s cuda_shm_client() is usable).
"""

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pins():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu-client"]
    pins = {}
    for req in extra:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9.]+)", req)
        assert m, f"gpu-client requirement {req!r} is not an exact pin"
        pins[m.group(1).lower()] = tuple(int(x) for x in m.group(2).split("."))
    return pins


def test_row7_gpu_client_extra_pins_what_tritonclients_cuda_shm_module_imports():
    spec = importlib.util.find_spec("tritonclient")
    if spec is None:
        pytest.skip("tritonclient not installed (it comes with the test setup)")
    src = (Path(spec.origin).parent / "utils/cuda_shared_memory/__init__.py").read_text()
    pins = _pins()
    if "from cuda import cudart" in src:
        assert "cuda-python" in pins and pins["cuda-python"] < (13,), "cuda-python 13 has no cuda.cudart"
    if "import pkg_resources" in src:
        assert "setuptools" in pins and pins["setuptools"] < (81,), "setuptools 81 has no pkg_resources"
    assert "pynvvideocodec" in pins and pins["pynvvideocodec"] >= (2, 1)  # row 6: packets with timestamps
