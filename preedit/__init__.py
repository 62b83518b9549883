"""preedit: deep pre-editing for video delivery.

```
 training/ ──checkpoint──> export/ ──writes──> model_repository/ ──> Triton server
 input ──> client/ decode ──NV12 via shared memory──> pre-editor ──> client/ encode ──> output
 perf/  perf_analyzer sweeps · pipeline benchmarks · BD-rate reports
```

Subpackages: `preedit.training`, `preedit.export`, `preedit.client`, `preedit.perf` (sourced from
the top-level folders of the same names). The shared core lives here: the network
(`preedit.network`), NV12/colour maths (`preedit.color`), the tensor contract (`preedit.spec`),
errors and the CLI.

Library use (see docs/api.md): `preedit.PreEditor` pre-edits NV12 frames or `av.VideoFrame`s in
your own pipeline; `preedit.transcode` is `preedit run` as a function. Both load lazily, so
`import preedit` pulls in neither torch, onnxruntime, tritonclient nor the CLI.
"""

from __future__ import annotations

from typing import Any, List

from preedit.errors import (EncodeError, InputError, ModelError, PreeditError, ServerError, StreamError,
                            UsageError, VerifyError)

__version__ = "0.1.0"

__all__ = [
    "PreEditor", "transcode", "PreeditError", "UsageError", "InputError", "StreamError", "ServerError",
    "ModelError", "EncodeError", "VerifyError", "__version__",
]

_LAZY = {"PreEditor": "preedit.api", "transcode": "preedit.api"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'preedit' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
