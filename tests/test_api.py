"""The public Python API (trtq/__init__.py): the names the README shows stay the functions."""

from __future__ import annotations

import subprocess
import sys

import pytest

import trtq

PUBLIC_FUNCTIONS = ["calibrate", "quantize", "evaluate", "benchmark", "export_onnx", "read_cache", "write_cache",
                    "run_quickstart"]


@pytest.mark.parametrize("first_import", ["trtq.pipeline.evaluation", "trtq.pipeline", "trtq.bench", "trtq.cache",
                                          "trtq.quickstart", "trtq.cli.eval"])
def test_public_functions_stay_functions_after_any_submodule_import(first_import):
    """Importing a submodule (the flows' own modules included) must not rebind a package function to a
    module. Runs in a fresh interpreter: import order matters."""
    code = (
        "import importlib, inspect, trtq\n"
        f"importlib.import_module({first_import!r})\n"
        "import trtq.pipeline.evaluation\n"
        f"bad = [n for n in {PUBLIC_FUNCTIONS!r} if not inspect.isfunction(getattr(trtq, n))]\n"
        "from trtq import evaluate\n"
        "assert inspect.isfunction(evaluate), evaluate\n"
        "assert not bad, bad\n"
        "from trtq.compare.verdict import EvalReport  # submodules stay importable by their full names\n"
        "assert importlib.import_module('trtq.pipeline.evaluation').evaluate is trtq.evaluate\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_public_name_is_listed_and_resolves():
    for name in PUBLIC_FUNCTIONS:
        assert name in trtq.__all__
        assert callable(getattr(trtq, name))
    with pytest.raises(AttributeError):
        trtq.no_such_name  # noqa: B018


def test_import_trtq_stays_light():
    """`import trtq` loads no numpy-heavy submodule, torch, TensorRT or onnxruntime."""
    code = ("import sys, trtq\n"
            "heavy = [m for m in ('torch', 'tensorrt', 'onnxruntime', 'onnx', 'trtq.compare', 'trtq.pipeline')"
            " if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
