"""DeepStream nvinfer configs: nvinfer's key-file rules, the exact y = k * (x - offsets) mapping, --fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trtq.deploy.calibration import ImagePreprocessing, read_calibration
from trtq.deploy.check import check_config
from trtq.deploy.deepstream import check_rules, nvinfer_normalization, parse_keyfile, write_config
from trtq.errors import TrtqError

from conftest import IMAGENET_MEAN, IMAGENET_STD, SIZE  # noqa: E402  (tests/deploy/conftest.py)


def _image(mean=(0.0,) * 3, std=(1.0,) * 3, scale=1 / 255, order="RGB"):
    return ImagePreprocessing("images", "NCHW", 3, 64, 64, order, scale, tuple(mean), tuple(std))


def test_one_std_maps_exactly_onto_net_scale_factor_and_offsets():
    image = _image(mean=IMAGENET_MEAN, std=(0.25,) * 3)
    norm = nvinfer_normalization(image)
    assert norm.exact
    x = np.arange(256, dtype=np.float64)
    gain, bias = image.gain_bias()
    for c in range(3):  # nvinfer's y = k * (x - offset_c) equals the calibration's (x * scale - mean) / std
        np.testing.assert_allclose(norm.net_scale_factor * (x - norm.offsets[c]), gain[c] * x + bias[c],
                                   rtol=1e-12, atol=1e-12)


def test_per_channel_std_has_no_nvinfer_form():
    norm = nvinfer_normalization(_image(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    assert not norm.exact and "std" in norm.reason


def test_rules_reject_what_nvinfer_refuses():
    groups = parse_keyfile("[property]\ninfer-dims=3;64\noffsets=1;2;3;4;5\nnetwork-mode=7\nbatch-size=0\n"
                           "model-color-format=1\nnet-scale-factor=abc\n")
    values, problems = check_rules(groups)
    flagged = {problem.split("=")[0] for problem in problems}
    assert flagged == {"infer-dims", "offsets", "network-mode", "batch-size", "net-scale-factor"}
    assert values["model-color-format"] == 1
    assert check_rules(parse_keyfile("[other]\na=1\n"))[1] == ["no [property] group (nvinfer requires it)"]
    with pytest.raises(TrtqError):
        parse_keyfile("key-before-group=1\n[property]\n")


def test_exact_config_follows_the_rules_and_matches(yolo_unit_scale, tmp_path):
    model, cache = yolo_unit_scale
    output = tmp_path / "ds" / "config_infer.txt"
    result = write_config(model, cache, output)
    values, problems = check_rules(parse_keyfile(output.read_text()))
    assert problems == []
    assert values["network-mode"] == 1 and values["model-color-format"] == 0 and values["batch-size"] == 1
    assert values["infer-dims"] == (3, *SIZE)
    assert values["net-scale-factor"] == pytest.approx(1 / 255, rel=1e-9)
    assert "offsets" not in values  # all zero: left out
    # relative paths resolve against the config's folder, as nvinfer resolves them
    assert (output.parent / values["int8-calib-file"]).resolve() == Path(cache).resolve()
    assert (output.parent / values["onnx-file"]).resolve() == Path(model).resolve()
    assert output.read_text().startswith("# written by trtq deploy")
    assert check_config(output, cache).mismatches == []
    assert result["normalization"].exact


def test_glib_reads_the_config_where_pygobject_is_installed(yolo_unit_scale, tmp_path):
    gi = pytest.importorskip("gi", reason="PyGObject (GLib's own key-file parser) is not installed")
    gi.require_version("GLib", "2.0")
    from gi.repository import GLib

    model, cache = yolo_unit_scale
    output = tmp_path / "config_infer.txt"
    write_config(model, cache, output)
    keyfile = GLib.KeyFile()
    keyfile.load_from_file(str(output), GLib.KeyFileFlags.NONE)
    assert keyfile.get_integer_list("property", "infer-dims") == [3, *SIZE]
    assert keyfile.get_double("property", "net-scale-factor") == pytest.approx(1 / 255)


def test_per_channel_std_is_refused_without_fold(yolo_imagenet, tmp_path):
    model, cache = yolo_imagenet
    output = tmp_path / "config_infer.txt"
    with pytest.raises(TrtqError, match="--fold"):
        write_config(model, cache, output)
    assert not output.exists()


def test_fold_writes_an_exact_config_for_a_verified_model(yolo_imagenet, tmp_path):
    model, cache = yolo_imagenet
    output = tmp_path / "config_infer.txt"
    result = write_config(model, cache, output, fold=True)
    folded_cache = tmp_path / "yolo.folded.calib.cache"
    assert {Path(p).name for p in result["written"]} == {"config_infer.txt", "yolo.folded.onnx",
                                                        "yolo.folded.calib.cache", "yolo.folded.calib.cache.json"}
    values, problems = check_rules(parse_keyfile(output.read_text()))
    assert problems == [] and values["onnx-file"] == "yolo.folded.onnx"
    np.testing.assert_allclose(values["offsets"], np.asarray(IMAGENET_MEAN) * 255, rtol=1e-9)
    folded = read_calibration(folded_cache)
    assert folded.image.std == (1.0, 1.0, 1.0) and folded.sidecar["folded"]["verified_samples"] > 0
    assert folded.sidecar["folded"]["max_error"] <= 1e-4 * folded.sidecar["folded"]["max_output"]
    assert not check_config(output, folded_cache).changes_numbers
    # the original calibration's amax carry over, except the input's (now z = y * std)
    original = read_calibration(cache).sidecar["amax"]
    moved = {k for k, v in folded.sidecar["amax"].items() if original.get(k) != v}
    assert moved == {"images"}


def test_a_letterboxed_calibration_writes_nvinfers_letterbox_and_check_holds_a_config_to_it(
        tmp_path, yolo_model_path, photo_crops_folder):
    from conftest import _calibrate

    model, cache = _calibrate(tmp_path, yolo_model_path, photo_crops_folder, "letterbox", resize="letterbox",
                              pad_position="corner")
    output = tmp_path / "ds" / "config_infer.txt"
    write_config(model, cache, output)
    values, problems = check_rules(parse_keyfile(output.read_text()))
    assert problems == []
    assert values["maintain-aspect-ratio"] is True and values["symmetric-padding"] is False
    assert check_config(output, cache).mismatches == []
    stretched = output.read_text().replace("maintain-aspect-ratio=1", "maintain-aspect-ratio=0")
    output.write_text(stretched)
    (mismatch,) = check_config(output, cache).mismatches
    assert mismatch.what == "resize" and mismatch.changes_numbers


def test_engine_build_report_reaches_the_config(yolo_unit_scale, tmp_path, capsys):
    """`deploy deepstream --engine`: a DLA engine gets enable-dla/use-dla-core from its build report, one plugin
    library becomes custom-lib-path (nvinfer loads it before the engine), and both pass nvinfer's rules."""
    import json

    from trtq.cli import main

    model, cache = yolo_unit_scale
    engine = tmp_path / "dla.engine"
    engine.write_bytes(b"a DLA engine")
    Path(str(engine) + ".json").write_text(json.dumps({"tensorrt": {"version": "10.3.0", "dla_core": 1,
                                                                    "plugins": ["/opt/plugins/libnms.so"]}}))
    config = tmp_path / "config_infer.txt"
    assert main(["deploy", "deepstream", str(model), "--cache", str(cache), "-o", str(config),
                 "--engine", str(engine)]) == 0
    values, problems = check_rules(parse_keyfile(config.read_text()))
    assert not problems, problems
    assert (values["enable-dla"], values["use-dla-core"], values["custom-lib-path"]) == \
        (True, 1, "/opt/plugins/libnms.so")
    assert "DLA engine" in capsys.readouterr().out
    plain = tmp_path / "plain.txt"
    write_config(model, cache, plain)
    assert "enable-dla" not in plain.read_text() and "layer-device-precision" not in plain.read_text()
