"""Argument and shape checks of `trtq build` that run before TensorRT is touched."""

from __future__ import annotations

import numpy as np
import pytest

from trtq.backend.profiles import calibration_batch_size, calibration_shapes, is_dynamic, profile_shapes
from trtq.bench import parse_batch_sizes, parse_shapes
from trtq.errors import TrtqError
from trtq.graph.model import TensorSpec

F32 = np.dtype(np.float32)
DYNAMIC_BATCH = TensorSpec("images", ("batch", 3, 224, 224), F32)
FULLY_DYNAMIC = TensorSpec("images", ("batch", 3, "height", "width"), F32)
STATIC = TensorSpec("images", (1, 3, 224, 224), F32)


def test_parse_shapes_splits_on_the_last_colon():
    assert parse_shapes("images:1x3x224x224,ns:input:0:1x4") == {"images": (1, 3, 224, 224), "ns:input:0": (1, 4)}
    assert parse_shapes(None) == {}
    with pytest.raises(TrtqError, match="--min-shapes"):
        parse_shapes("images=1x3", "--min-shapes")


def test_parse_batch_sizes():
    assert parse_batch_sizes("32,1,8,8") == (32, 1, 8)
    for bad in ("a,b", "0,4"):
        with pytest.raises(TrtqError, match="batch sizes"):
            parse_batch_sizes(bad)


def test_dynamic_batch_spans_the_batch_sizes():
    profile = profile_shapes([DYNAMIC_BATCH], [1, 8, 32])
    assert profile == {"images": ((1, 3, 224, 224), (32, 3, 224, 224), (32, 3, 224, 224))}
    assert is_dynamic(profile)
    assert calibration_shapes(profile, 16) == {"images": (16, 3, 224, 224)}
    assert calibration_batch_size(profile, 16) == 16


def test_static_model():
    profile = profile_shapes([STATIC])
    assert profile == {"images": ((1, 3, 224, 224),) * 3} and not is_dynamic(profile)
    assert calibration_batch_size(profile, 32) == 1
    with pytest.raises(TrtqError, match="fixed batch size of 1"):
        profile_shapes([STATIC], [1, 8])


def test_other_dynamic_axes_need_explicit_shapes():
    with pytest.raises(TrtqError, match="dynamic dimension 'height'"):
        profile_shapes([FULLY_DYNAMIC], [1, 8])
    full = profile_shapes([FULLY_DYNAMIC], None, {"images": (1, 3, 320, 320)}, {"images": (8, 3, 320, 320)},
                          {"images": (8, 3, 640, 640)})
    assert full["images"][2] == (8, 3, 640, 640)
    opt_only = profile_shapes([FULLY_DYNAMIC], [1, 16], opt_shapes={"images": (4, 3, 320, 320)})
    assert opt_only == {"images": ((1, 3, 320, 320), (4, 3, 320, 320), (16, 3, 320, 320))}


@pytest.mark.parametrize("tables, message", [
    (({"images": (1, 3, 320, 320)}, None, None), "give all of"),
    (({"images": (1, 3, 320)}, {"images": (1, 3, 320)}, {"images": (1, 3, 320)}), "rank 4"),
    (({"images": (1, 4, 320, 320)}, {"images": (1, 4, 320, 320)}, {"images": (1, 4, 320, 320)}), "fixed at 3"),
    (({"images": (8, 3, 320, 320)}, {"images": (1, 3, 320, 320)}, {"images": (8, 3, 320, 320)}), "min <= opt <= max"),
    (({"other": (1, 3, 1, 1)}, None, None), "no input 'other'"),
])
def test_explicit_shape_errors(tables, message):
    with pytest.raises(TrtqError, match=message):
        profile_shapes([FULLY_DYNAMIC], None, *tables)


def test_each_input_spans_the_batch_sizes_on_its_own_batch_axis():
    """An LSTM state [layers, batch, hidden] varies on axis 1; a scalar stays a scalar."""
    x = TensorSpec("x", ("batch", 8, 8), F32)
    state = TensorSpec("h0", (1, "batch", 16), F32, batch_axis=1)
    mode = TensorSpec("mode", (), np.dtype(np.int64), batch_axis=None)
    profile = profile_shapes([x, state, mode], [1, 8])
    assert profile["h0"] == ((1, 1, 16), (1, 8, 16), (1, 8, 16))
    assert profile["mode"] == ((), (), ())
    axes = {"x": 0, "h0": 1, "mode": None}
    assert calibration_shapes(profile, 4, axes) == {"x": (4, 8, 8), "h0": (1, 4, 16), "mode": ()}
    assert calibration_batch_size(profile, 4, axes) == 4
    fixed = profile_shapes([TensorSpec("h0", (1, 2, 16), F32, batch_axis=1)])
    assert calibration_batch_size(fixed, 8, {"h0": 1}) == 2
