"""Pure decisions: INT8 path, build plans, precisions, fast precisions per compute capability."""

from __future__ import annotations

import pytest

from trtq.backend.policy import (EXPLICIT_PATH_API, IMPLICIT_PATH_API, REMOVED_IN_11, RUNTIME_API, check_supported,
                                 choose_int8_path, fast_precisions, int8_path_text, parse_version, plan_build,
                                 resolve_precision)
from trtq.errors import BackendUnavailable, TrtqError


@pytest.mark.parametrize("major, explicit, path", [(8, False, "implicit"), (10, False, "implicit"),
                                                   (10, True, "explicit"), (11, False, "explicit"),
                                                   (11, True, "explicit"), (12, False, "explicit")])
def test_choose_int8_path(major, explicit, path):
    assert choose_int8_path(major, explicit) == path
    assert int8_path_text(major, explicit).startswith(path)


def test_plans_on_tensorrt_10():
    best = plan_build(10, "best")
    assert (best.path, best.builder_flags, best.calibrator, best.strongly_typed) == ("implicit", ("INT8", "FP16"), True, False)
    fp16 = plan_build(10, "fp16")
    assert fp16.builder_flags == ("FP16",) and not fp16.fp16_graph and not fp16.calibrator
    fp32 = plan_build(10, "fp32")
    assert fp32.builder_flags == () and fp32.path == "implicit"
    explicit = plan_build(10, "best", explicit=True)
    assert (explicit.path, explicit.qdq_graph, explicit.fp16_graph, explicit.builder_flags) == ("explicit", True, True, ())


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "best"])
def test_tensorrt_11_never_uses_builder_flags_or_calibrators(precision):
    plan = plan_build(11, precision)
    assert plan.path == "explicit" and plan.strongly_typed and plan.builder_flags == () and not plan.calibrator
    assert plan.qdq_graph == (precision in ("int8", "best"))
    assert plan.fp16_graph == (precision in ("fp16", "best"))


def test_unknown_precision():
    with pytest.raises(TrtqError, match="unknown precision"):
        plan_build(10, "int4")


@pytest.mark.parametrize("args, expected", [((None, False, False), "fp32"), ((None, True, False), "int8"),
                                            ((None, False, True), "fp16"), ((None, True, True), "best"),
                                            (("best", True, True), "best"), (("fp16", False, False), "fp16")])
def test_resolve_precision(args, expected):
    assert resolve_precision(*args) == expected


def test_resolve_precision_contradiction():
    with pytest.raises(TrtqError, match="contradicts"):
        resolve_precision("fp32", int8=True)


@pytest.mark.parametrize("cc, fp16, int8", [((5, 3), True, False), ((6, 1), False, True), ((6, 2), True, False),
                                            ((7, 2), True, True), ((8, 7), True, True), ((9, 0), True, True),
                                            ((5, 0), False, False)])
def test_fast_precisions(cc, fp16, int8):
    assert fast_precisions(cc) == {"fp16": fp16, "int8": int8}


def test_versions():
    assert parse_version("10.3.0.26") == (10, 3, 0)
    assert parse_version("11") == (11, 0, 0)
    assert check_supported("8.6.2") == (8, 6, 2)
    with pytest.raises(BackendUnavailable, match="too old"):
        check_supported("8.5.3")


def test_paths_serving_tensorrt_11_declare_nothing_it_removed():
    assert not set(EXPLICIT_PATH_API) & set(REMOVED_IN_11)
    assert not set(RUNTIME_API) & set(REMOVED_IN_11)
    assert {"BuilderFlag.INT8", "IInt8EntropyCalibrator2"} <= set(IMPLICIT_PATH_API)
