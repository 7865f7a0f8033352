"""Smoke test of scripts/bench_accuracy.py on the digits demo (a few seconds): the table it prints is complete."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from trtq.compare.accumulate import compare_outputs
from trtq.compare.decisions import decision_axes, feature_axes
from trtq.compare.usermetric import UserMetric

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import bench_accuracy

    return bench_accuracy


def test_channel_groups_are_scored_separately(bench):
    from _bench_models import Setup

    setup = Setup("toy", Path("toy.onnx"), None, None, groups={"out": [("boxes 0:4", 1, slice(0, 4)),
                                                                          ("scores 4:6", 1, slice(4, 6))]})
    out = np.arange(2 * 6 * 3, dtype=np.float32).reshape(2, 6, 3)
    views = bench._views(setup, {"out": out})
    assert list(views) == ["out", "out[boxes 0:4]", "out[scores 4:6]"]
    np.testing.assert_array_equal(views["out[scores 4:6]"], out[:, 4:6])


def test_digits_table_has_every_algorithm(bench, tmp_path, capsys):
    from trtq import defaults

    assert bench.main(["--models", "digits", "--quick", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(FP32)" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if " logits " in line}
    for algorithm in defaults.ALGORITHMS:
        cells = rows[algorithm]
        snr = float(cells[4])
        assert math.isfinite(snr) and snr > 0, cells
        # columns: algorithm output cos-mean cos-worst SNR agree all worst-channel top-1 sec
        assert 0.9 <= float(cells[5]) <= 1.0, cells  # top-1 agreement with FP32 (logits declared class scores)
        assert cells[8].endswith("%"), cells  # true top-1 on the labelled held-out digits
    assert "<- auto's choice" in out
    assert "[digits] a default result below 20 dB is warned about: PASS" in out
    assert "[digits] auto within 0.3 dB (or 2 bootstrap deviations of the paired difference) of the best single " \
           "algorithm on worst SNR: PASS" in out
    assert "[digits] auto within noise of the best single algorithm on top-1 agreement of 'logits': PASS" in out


def test_trained_families_are_judged_by_what_they_decide(bench, tmp_path):
    """The detector and reader families (a few training steps here): the graph says what each decides."""
    import _bench_families as families

    from trtq.graph.model import load_onnx
    from trtq.ort import create_session, run

    images, boxes = families.scenes(4, seed=5, train=False)
    assert images.shape == (4, 1, 64, 64) and all(b.shape[1] == 5 and 1 <= len(b) <= 3 for b in boxes)
    line, labels = families.lines(3, seed=5, train=False)
    assert line.shape == (3, 1, 8, 40) and labels.shape == (3, 5)

    detector = families.make_detector(tmp_path, steps=5)
    reader = families.make_reader(tmp_path, steps=5)
    assert decision_axes(load_onnx(reader)) == {"probs": (2, "Softmax")}
    assert decision_axes(load_onnx(detector)) == {}  # sigmoid scores concatenated with boxes: no argmax
    out = run(create_session(str(detector)), {"images": images})["output"]
    (m,) = compare_outputs([({"output": out}, {"output": out * 1.01})],
                              feature_axes=feature_axes(load_onnx(detector)))
    assert out.shape == (4, 64, 15) and m.channel_axis == 2 and m.worst_channel[0].startswith("'output'[..., ")
    recall = UserMetric.load(f"{bench.models.EXAMPLES / 'box_recall.py'}:matched_box_recall")
    assert recall({"output": out}, {"output": out}, {"images": images}).tolist() == [1.0] * 4


def test_mobilenet_style_families_decide_by_class_and_by_mask(bench, tmp_path):
    """The MobileNetV3-style classifier (depthwise, HardSwish, squeeze-excite) and segmenter (a few training steps):
    the graph says the first decides a class and the second a binary mask, judged by IoU."""
    import _bench_families as families
    from trtq.graph.model import load_onnx
    from trtq.graph.signature import read_signature

    images, labels = families.patches(3, seed=5, train=False)
    assert images.shape == (3, 1, 32, 32) and labels.shape == (3,)
    scenes, _, masks = families.scenes_with_masks(2, seed=5, train=False)
    assert masks.shape == scenes.shape and 0 < masks.mean() < 0.5
    mobilenet = load_onnx(families.make_mobilenet(tmp_path, steps=2))
    ops = {n.op_type for n in mobilenet.graph.node}
    assert {"HardSwish", "HardSigmoid", "GlobalAveragePool", "Mul"} <= ops
    assert any(n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
               for n in mobilenet.graph.node)  # depthwise
    assert decision_axes(mobilenet) == {"probs": (1, "Softmax")}
    segmenter = load_onnx(families.make_segmenter(tmp_path, steps=2))
    assert read_signature(segmenter).mask_axes() == {"mask": 1}
    assert "Resize" in {n.op_type for n in segmenter.graph.node}  # bilinear upsampling
