"""The deterministic (integer) model: quantize, reference maths, ONNX/Torch forms, write, check, search."""
