"""ONNX graph work: inspection, export from PyTorch, Q/DQ insertion, FP16 copies."""
