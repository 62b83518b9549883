"""preedit.export: checkpoint → validated model in the Triton model repository.

```
 checkpoint ──> trace/export (ONNX; Torch-TensorRT on GPU hosts) ──> numerical check
            ──> model_repository/<name>/{config.pbtxt, 1/model.*, contract.json}
```
"""
