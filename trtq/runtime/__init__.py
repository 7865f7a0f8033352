"""Running a model: one protocol for ONNX Runtime and TensorRT engines, held-back replays, and the streaming
wrapper that feeds state back around any runtime.

- :mod:`.base`       the protocol (activate, input metadata, infer, deactivate) and its ONNX Runtime and
                     engine runtimes (:mod:`trtq.backend` imported only when an engine activates)
- :mod:`.replay`     a fixed set of batches with the reference outputs, scored against candidates
- :mod:`.streaming`  state outputs fed back as inputs, step by step, around any session
"""
