"""trtq.cli.options: the data flags every subcommand shares, and their errors."""

from __future__ import annotations

import argparse

import pytest

from trtq import defaults
from trtq.cli.options import OptionError, add_data_arguments, data_spec_from_args
from trtq.data.spec import DataSpec, Preprocess
from trtq.errors import TrtqError


def parse(argv, **kw):
    parser = argparse.ArgumentParser(prog="trtq calibrate")
    add_data_arguments(parser, **kw)
    return parser, parser.parse_args(argv)


def test_defaults_match_the_dataspec_defaults():
    _, args = parse(["--calib", "calib_data/"])
    assert data_spec_from_args(args) == DataSpec("calib_data/")
    assert data_spec_from_args(args, shuffle=False).shuffle is False


def test_every_option():
    argv = ["--calib", "imgs", "--samples", "all", "--batch-size", "8", "--seed", "3", "--size", "224x256",
            "--resize", "shorter", "--crop-fraction", "0.875", "--scale", "1/127.5", "--mean", "0.485,0.456,0.406",
            "--std", "0.229 0.224 0.225", "--bgr", "--layout", "nhwc", "--dtype", "float16"]
    spec = data_spec_from_args(parse(argv)[1])
    assert spec == DataSpec("imgs", samples=None, batch_size=8, seed=3, preprocess=Preprocess(
        size=(224, 256), resize="shorter", crop_fraction=0.875, scale=1 / 127.5, mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), channel_order="BGR", layout="NHWC", dtype="float16"))


def test_letterbox_options():
    argv = ["--calib", "imgs", "--size", "32x320", "--resize", "letterbox", "--pad-value", "114",
            "--pad-position", "corner"]
    pre = data_spec_from_args(parse(argv)[1]).preprocess
    assert (pre.resize, pre.pad_value, pre.pad_position) == ("letterbox", 114.0, "corner")


@pytest.mark.parametrize("argv, message", [
    (["--size", "32"], r"argument --size: expected HEIGHTxWIDTH such as 320x320, got '32'"),
    (["--size", "0x3"], r"argument --size: height and width must be positive"),
    (["--mean", "1,2"], r"argument --mean: expected one value or one per channel \(3, .*\), got 2: '1,2'"),
    (["--std", "0"], r"argument --std: must not be 0"),
    (["--mean", "a,b,c"], r"argument --mean: expected a number, got 'a'"),
    (["--scale", "1/0"], r"argument --scale: expected a number or a fraction like 1/255, got '1/0'"),
    (["--scale", "-1"], r"argument --scale: must be positive"),
    (["--samples", "0"], r"argument --samples: must be at least 1, got 0"),
    (["--samples", "many"], r"argument --samples: expected an integer, got 'many'"),
    (["--batch-size", "0"], r"argument --batch-size: must be at least 1"),
    (["--crop-fraction", "1.5"], r"argument --crop-fraction: must be in \(0, 1\]"),
    (["--dtype", "int8"], r"argument --dtype: expected a float type such as float32 or float16, got 'int8'"),
    (["--dtype", "floaty"], r"argument --dtype: expected a float type"),
    (["--resize", "letterbox", "--pad-value", "256"], r"argument --pad-value: is a 0-255 pixel value, got 256"),
    (["--resize", "letterbox", "--crop-fraction", "0.875"], r"argument --crop-fraction: does not apply to --resize "
                                                             r"letterbox, which pads and does not crop"),
])
def test_bad_values_raise_trtq_errors(argv, message):
    _, args = parse(["--calib", "d", *argv])
    with pytest.raises(OptionError, match=message) as caught:
        data_spec_from_args(args)
    assert isinstance(caught.value, TrtqError)


@pytest.mark.parametrize("formatter", [argparse.HelpFormatter, argparse.ArgumentDefaultsHelpFormatter])
def test_help_explains_and_shows_defaults(formatter):
    parser = argparse.ArgumentParser(prog="trtq calibrate", formatter_class=formatter)
    add_data_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "(default: None)" not in text and text.count(f"(default: {defaults.SAMPLES})") == 1
    for expected in (f"(default: {defaults.SAMPLES})", f"(default: {defaults.BATCH_SIZE})", f"(default: {defaults.SEED})",
                     "(default: 1/255, giving 0-1)", "(default: stretch)", "(default: RGB)", "(default: 0)",
                     "(default: 1)", "(default: the model input's dtype)", "load_data()", "calibration data"):
        assert expected in text, expected
    parser, _ = parse([], flag="--data", required=False, default_samples=None, help_text="evaluation data")
    text = " ".join(parser.format_help().split())
    assert "(default: all)" in text and "evaluation data" in text


def test_required_flag_and_second_data_path():
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args([])
    add_data_arguments(parser, flag="--eval-data", required=False, default_samples=None, prefix="eval-")
    args = parser.parse_args(["--calib", "c", "--samples", "64", "--eval-data", "e", "--eval-size", "32x32"])
    calib = data_spec_from_args(args)
    evaluation = data_spec_from_args(args, flag_dest="eval_data", shuffle=False)
    assert (calib.path, calib.samples, calib.preprocess.size) == ("c", 64, None)
    assert (evaluation.path, evaluation.samples, evaluation.preprocess.size) == ("e", None, (32, 32))
    missing = parser.parse_args(["--calib", "c"])
    with pytest.raises(OptionError, match=r"argument --eval-data: a data path is required"):
        data_spec_from_args(missing, flag_dest="eval_data")
