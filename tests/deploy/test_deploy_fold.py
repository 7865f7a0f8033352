"""Per-channel std folded into the model: the folded model matches the original within float tolerance."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtq.deploy.calibration import ImagePreprocessing
from trtq.deploy.fold import fold_std, verify_fold, z_amax

from conftest import IMAGENET_MEAN, IMAGENET_STD, SIZE  # noqa: E402  (tests/deploy/conftest.py)


def _imagenet(name="images", layout="NCHW"):
    return ImagePreprocessing(name, layout, 3, SIZE[0], SIZE[1], "RGB", 1 / 255, IMAGENET_MEAN, IMAGENET_STD)


def _photo_feeds(folder, count=8):
    from trtq.data import open_source
    from trtq.data.spec import DataSpec, Preprocess
    from trtq.graph.model import TensorSpec

    spec = DataSpec(path=str(folder), samples=count, batch_size=4,
                    preprocess=Preprocess(size=SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD))
    source = open_source(spec, [TensorSpec("images", ("N", 3, None, None), np.dtype("float32"))])
    return [dict(batch) for batch in source]


def test_yolo_first_conv_absorbs_the_std(yolo_model_path, photo_crops_folder):
    original = onnx.load(str(yolo_model_path))
    folded, how, renamed = fold_std(original, _imagenet())
    assert "Conv" in how and renamed is None
    assert len(folded.graph.node) == len(original.graph.node)  # same graph: only the first weights changed
    samples, error, peak = verify_fold(original, folded, _photo_feeds(photo_crops_folder), _imagenet())
    assert samples == 8 and peak > 0
    assert error <= 1e-5 * peak  # float32 rounding of reordered products, nothing more


def test_a_mul_is_inserted_where_the_input_does_not_feed_only_convs(photo_crops_folder):
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"], pads=[1, 1, 1, 1])],
        "relu_first", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, *SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, *SIZE])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folded, how, renamed = fold_std(model, _imagenet())
    assert "Mul" in how and renamed == "images__trtq_std_folded"
    samples, error, peak = verify_fold(model, folded, _photo_feeds(photo_crops_folder), _imagenet())
    assert samples == 8 and error <= 1e-6 * peak


def test_folded_input_amax_covers_every_pixel():
    image = _imagenet()
    x = np.arange(256, dtype=np.float64)[:, None]
    z = x * image.scale - np.asarray(image.mean)[None, :]
    assert z_amax(image) == np.abs(z).max()
