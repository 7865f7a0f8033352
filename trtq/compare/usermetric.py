"""The user's own metric (``--metric script.py:function``), scored beside the outputs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import TrtqError


class UserMetric:
    """The user's own task metric, ``--metric FILE.py:NAME``.

    ``NAME(reference_outputs, candidate_outputs, inputs) -> float``: dicts of arrays for one
    sample (batch axis of length 1), higher is better, 1.0 for identical outputs. It is
    called once per sample; the score is the mean over samples (so auto can resample it
    to estimate its noise). Loaded by :func:`trtq.data.script.load_function`, the loader of
    every ``file.py:function`` trtq takes.
    """

    def __init__(self, function, name: str, source: str = ""):
        self.function = function
        self.name = name
        self.source = source  # the file, for messages

    @property
    def shown(self) -> str:
        """``m.py:score``: the metric as the user gave it."""
        return f"{self.source}:{self.name}" if self.source else self.name

    @classmethod
    def load(cls, spec: str) -> "UserMetric":
        from ..data.script import load_function, split_script_path

        parts = split_script_path(spec) if ":" in str(spec) else None
        if parts is None:
            raise TrtqError(f"--metric {spec}: expected FILE.py:NAME, a Python file and the function in it")
        script, function = parts
        return cls(load_function(Path(script), function, script, what="metric file"), function, script)

    def __call__(self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                 feed: Mapping[str, np.ndarray]) -> np.ndarray:
        """The metric of each sample of one batch, ``[n]``."""
        from ..usercode import user_code

        n = len(next(iter(reference.values())))
        values = np.empty(n)
        for i in range(n):
            one = slice(i, i + 1)
            try:
                with user_code(f"--metric {self.shown}"):
                    value = self.function({k: v[one] for k, v in reference.items()},
                                          {k: v[one] for k, v in candidate.items()},
                                          {k: np.asarray(v)[one] for k, v in feed.items()})
                values[i] = float(value)
            except TrtqError:
                raise
            except Exception as exc:  # noqa: BLE001 -- the user's code may raise anything
                raise TrtqError(f"--metric {self.name} failed: {type(exc).__name__}: {exc}") from exc
            if math.isnan(values[i]):
                raise TrtqError(f"--metric {self.name} returned NaN; it must return a number, higher is better")
        return values
