"""Python-backend test models for Triton: `PY_MODEL_HEADER` + a `TritonPythonModel` class body.

The header applies PYTHONPATH (the stub runs isolated, `-I`; the same work-around as
export/templates/python_onnx_model.py) and imports numpy and `pb_utils`.
"""

PY_MODEL_HEADER = '''
import os
import sys
import time

for _path in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
'''
