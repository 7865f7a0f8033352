"""trtq deploy check: every mismatch reported, exit 2 when one changes the numbers."""

from __future__ import annotations

from trtq.cli import main
from trtq.deploy.check import check_config
from trtq.deploy.deepstream import write_config
from trtq.deploy.triton import write_repository


def _changed(report) -> set:
    return {m.what for m in report.mismatches if m.changes_numbers}


def test_bgr_against_an_rgb_calibration_is_caught(yolo_unit_scale, tmp_path):
    model, cache = yolo_unit_scale
    config = tmp_path / "config_infer.txt"
    write_config(model, cache, config)
    bgr = tmp_path / "bgr.txt"
    bgr.write_text(config.read_text().replace("model-color-format=0", "model-color-format=1"))
    assert _changed(check_config(bgr, cache)) == {"channel order"}
    assert main(["deploy", "check", str(bgr), "--cache", str(cache)]) == 2
    assert main(["deploy", "check", str(config), "--cache", str(cache)]) == 0


def test_imagenet_std_against_one_over_255_is_caught(yolo_unit_scale, yolo_imagenet, tmp_path):
    model, cache = yolo_unit_scale
    _, imagenet_cache = yolo_imagenet
    config = tmp_path / "config_infer.txt"
    write_config(model, cache, config)  # net-scale-factor 1/255, no offsets
    report = check_config(config, imagenet_cache)
    assert {"scale", "offsets", "int8-calib-file"} <= _changed(report)
    scale = next(m for m in report.mismatches if m.what == "scale")
    assert "--fold" in scale.fix  # per-channel std: the fix is folding, not another scale


def test_input_size_precision_and_tensorrt_version(yolo_unit_scale, tmp_path):
    model, cache = yolo_unit_scale
    config = tmp_path / "config_infer.txt"
    write_config(model, cache, config)
    text = config.read_text().replace("infer-dims=3;64;64", "infer-dims=3;320;320").replace("network-mode=1",
                                                                                          "network-mode=2")
    edited = tmp_path / "edited.txt"
    edited.write_text(text)
    report = check_config(edited, cache, trt_version=8601)
    assert _changed(report) == {"input size"}  # FP16 mode does not read the cache: a note, not a number change
    assert "precision" in {m.what for m in report.mismatches if not m.changes_numbers}
    assert _changed(check_config(config, cache, trt_version=8601)) == {"TensorRT version"}


def test_triton_config_mismatches(yolo_unit_scale, yolo_imagenet, tmp_path):
    model, cache = yolo_unit_scale
    _, imagenet_cache = yolo_imagenet
    result = write_repository(model, cache, tmp_path / "repo")
    config = result["config"]
    assert check_config(config, cache).mismatches == []
    # the same model calibrated with ImageNet mean/std: the recorded client preprocessing differs
    assert {"preprocessing mean", "preprocessing std"} <= _changed(check_config(config, imagenet_cache))
    edited = tmp_path / "config.pbtxt"
    edited.write_text(config.read_text().replace("TYPE_FP32", "TYPE_FP16", 1).replace("dims: [ 3, 64, 64 ]",
                                                                                     "dims: [ 64, 64, 3 ]"))
    assert _changed(check_config(edited, cache)) == {"input images dims", "input images data type"}
