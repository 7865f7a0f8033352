"""The flows, each composed from the layers below (cli and quickstart call these; nothing below calls up).

- :mod:`.calibration`   statistics -> amax per algorithm -> auto's choice -> verdict -> cache + sidecar
- :mod:`.choose`        ``--algo auto``: candidates scored on held-back samples with bootstrap noise
- :mod:`.holdout`       the held-back samples
- :mod:`.quantization`  a Q/DQ model from a cache, the recorded verdict checked
- :mod:`.evaluation`    reference vs candidate (ONNX model or engine) on held-back data
- :mod:`.streaming`     the same for streaming models, each with its own state fed back
"""

from __future__ import annotations

from .calibration import calibrate
from .evaluation import evaluate
from .quantization import quantize

__all__ = ["calibrate", "evaluate", "quantize"]
