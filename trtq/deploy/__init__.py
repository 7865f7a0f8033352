"""From a calibration to a serving pipeline: Triton and DeepStream configs that match it, and a check.

The calibration's sidecar records the model, its inputs and the preprocessing the
calibration samples went through; a serving pipeline that feeds the engine anything else
(another channel order, per-channel std where the calibration used 1/255) runs INT8 on
inputs it was never calibrated for, and nothing says so. This package writes the configs
that match and checks the ones that exist:

- :mod:`.calibration`  what a cache + sidecar say about the deployment (preprocessing, TensorRT version)
- :mod:`.triton`       Triton model repositories (``config.pbtxt`` + ``model.plan`` / Q/DQ ``model.onnx``)
- :mod:`.deepstream`   DeepStream ``nvinfer`` key files, the ``y = net-scale-factor * (x - offsets)`` mapping
- :mod:`.fold`         per-channel std folded into the model, so a DeepStream config can be exact
- :mod:`.check`        every mismatch between an existing config and the calibration

Nothing here imports TensorRT: an engine's I/O and profile come from
:func:`trtq.backend.engine_io.read_engine_io` where TensorRT is installed, else from the build
report ``trtq build`` wrote beside the engine and the ONNX model.
"""

from __future__ import annotations

#: What the first line of every config trtq deploy writes starts with (the output guard's artifact check).
MARKER = "# written by trtq deploy"

__all__ = ["MARKER"]
