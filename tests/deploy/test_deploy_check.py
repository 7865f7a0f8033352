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


def test_triton_configs_are_read_as_triton_reads_them(yolo_unit_scale, tmp_path, capsys):
    """Valid C escapes in strings parse (\\x41, octal); a misspelt field and Triton's model-config rules
    (an empty reshape in a non-batching model) are reported as Triton reports them, exit 2."""
    model, cache = yolo_unit_scale
    config = write_repository(model, cache, tmp_path / "repo")["config"]
    text = config.read_text()
    escaped = tmp_path / "escaped.pbtxt"
    escaped.write_text(text.replace('name: "yolo"', 'name: "\\x79\\157lo"'))
    assert main(["deploy", "check", str(escaped), "--cache", str(cache)]) == 0
    misspelt = tmp_path / "misspelt.pbtxt"
    misspelt.write_text(text.replace("max_batch_size:", "max_batch_sise:"))
    assert main(["deploy", "check", str(misspelt), "--cache", str(cache)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert 'no field named "max_batch_sise"' in out and "Traceback" not in out, out
    scalar = tmp_path / "scalar.pbtxt"
    scalar.write_text(text.replace("max_batch_size: 8", "max_batch_size: 0").replace(
        "dims: [ 3, 64, 64 ]", "dims: [ 1 ]\n    reshape: { shape: [ ] }").replace("dynamic_batching {", "#").replace(
        "  preferred_batch_size: [ 8 ]", "#").replace("  max_queue_delay_microseconds: 100\n}", "#"))
    report = check_config(scalar, cache)
    problems = [m.config for m in report.mismatches if m.what == "Triton load"]
    assert any("cannot have empty reshape for non-batching model" in p for p in problems), report.mismatches


def test_deepstream_float_layers_are_compared(yolo_unit_scale, tmp_path):
    """A calibration that kept layers in float: the written config keeps them FP32 (layer-device-precision), and
    a config without them is caught."""
    import json
    import shutil

    from trtq.cache import sidecar_path

    model, cache = yolo_unit_scale
    mixed = tmp_path / "mixed.calib.cache"
    shutil.copy(cache, mixed)
    sidecar = json.loads(sidecar_path(cache).read_text())
    sidecar["mixed_precision"] = {"float_layers": ["/model.22/Concat_3", "/model.22/dfl/conv/Conv"]}
    sidecar_path(mixed).write_text(json.dumps(sidecar))
    config = tmp_path / "config_infer.txt"
    write_config(model, mixed, config)
    assert "layer-device-precision=/model.22/Concat_3:fp32:gpu;/model.22/dfl/conv/Conv:fp32:gpu" in config.read_text()
    assert check_config(config, mixed).mismatches == []
    stripped = tmp_path / "stripped.txt"
    stripped.write_text("\n".join(l for l in config.read_text().splitlines() if "layer-device-precision" not in l))
    assert _changed(check_config(stripped, mixed)) == {"mixed precision"}
