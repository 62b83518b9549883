"""Run-time fix-ups the pinned wheels need, made inside the project (no system changes).

- Triton's python backend must find a stub built for *this* Python: the nvidia-pytriton wheel
  ships one per version under `python_backend_stubs/X.Y/`; we assemble a backend directory
  `.cache/triton/backends/python/` with that stub beside `libtriton_python.so`.
- perf_analyzer (from `tritonclient[all]==2.51.0`) links `libb64.so.0d` and `libcudart.so.12`
  even on CPU: we link the copies shipped in `nvidia_pytriton.libs` and
  `nvidia-cuda-runtime-cu12` into `.cache/triton/lib/` and put that on `LD_LIBRARY_PATH` when
  we start it.

`python -m preedit.install_support` is idempotent; `scripts/setup.sh` calls it.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from preedit.errors import ServerError
from preedit.paths import cache_dir


@dataclass(frozen=True)
class TritonLayout:
    """Where the pieces of the embedded Triton server are on this install."""

    server_bin: Path
    backend_dir: Path
    lib_dir: Path
    wheel_libs: Path


def _pytriton_root() -> Path:
    try:
        import pytriton  # noqa: F401  (only its location is needed)
    except ImportError as exc:  # pragma: no cover - install problem
        raise ServerError("nvidia-pytriton is not installed: run scripts/setup.sh") from exc
    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def _wheel_libs() -> Path:
    import pytriton  # lazy: pytriton

    return Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        if dst.is_symlink() and os.readlink(dst) == str(src):
            return
        dst.unlink()
    dst.symlink_to(src)


def prepare(root: Optional[Path] = None) -> TritonLayout:
    """Assemble the backend and library directories (idempotent) and return the layout."""
    root = root or cache_dir() / "triton"
    triton = _pytriton_root()
    server_bin = triton / "bin" / "tritonserver"
    if not server_bin.is_file():
        raise ServerError(f"tritonserver binary missing from the nvidia-pytriton wheel: {server_bin}")
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"no Triton python-backend stub for Python {pyver} in {stub.parent.parent}")

    backend_dir = root / "backends"
    py_backend = backend_dir / "python"
    py_backend.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        _link(triton / "backends" / "python" / name, py_backend / name)
    stub_dst = py_backend / "triton_python_backend_stub"
    if not stub_dst.exists() or stub_dst.stat().st_size != stub.stat().st_size:
        shutil.copy2(stub, stub_dst)  # a copy: the stub resolves its libraries relative to itself

    lib_dir = root / "lib"
    lib_dir.mkdir(parents=True, exist_ok=True)
    wheel_libs = _wheel_libs()
    b64 = sorted(glob.glob(str(wheel_libs / "libb64*.so.0d")))
    if b64:
        _link(Path(b64[0]), lib_dir / "libb64.so.0d")
    try:
        import nvidia.cuda_runtime as cuda_runtime  # lazy: optional dependency

        cudart = Path(list(cuda_runtime.__path__)[0]) / "lib" / "libcudart.so.12"
        if cudart.is_file():
            _link(cudart, lib_dir / "libcudart.so.12")
    except ImportError:
        pass
    return TritonLayout(server_bin=server_bin, backend_dir=backend_dir, lib_dir=lib_dir, wheel_libs=wheel_libs)


def library_env(layout: TritonLayout, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment with the wheel's and our linked libraries on LD_LIBRARY_PATH."""
    env = dict(os.environ if base is None else base)
    paths = [str(layout.lib_dir), str(layout.wheel_libs)]
    if env.get("LD_LIBRARY_PATH"):
        paths.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(paths)
    return env


def main() -> int:
    layout = prepare()
    print(f"triton server: {layout.server_bin}")
    print(f"python backend: {layout.backend_dir / 'python'}")
    print(f"libraries: {layout.lib_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
