"""preedit.export: checkpoint → validated model in the Triton model repository.

```
 checkpoint ──> trace/export (ONNX; Torch-TensorRT on GPU hosts) ──> numerical check
            ──> model_repository/<name>/{config.pbtxt, contract.json, 1/model.*}
```
"""

from preedit.export.model_config import build_model_config, parse_pbtxt, read_model_config, to_pbtxt, write_model_config
from preedit.export.repository import cpu_model_config, export_model_repository, read_contract, write_onnx_model

__all__ = [
    "build_model_config", "parse_pbtxt", "read_model_config", "to_pbtxt", "write_model_config",
    "cpu_model_config", "export_model_repository", "read_contract", "write_onnx_model",
]
