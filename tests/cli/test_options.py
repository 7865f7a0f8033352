"""The command a hint prints is the user's own: every option given parses back to the same values."""

from __future__ import annotations

import shlex

import pytest

from trtq.cli import build_parser
from trtq.cli.options import budget_command_from_args, given_options


@pytest.mark.parametrize("words", [
    ["calibrate", "m.onnx", "--calib", "d", "--size", "64x48", "--mean", "0.5", "--std", "0.25", "--bgr",
     "--samples", "all", "--batch-size", "16", "--max-memory", "1.5G", "--trt-version", "10.3", "--equalize",
     "--class-output", "a", "--class-output", "b:2", "--percentile", "99.9", "-o", "c.cache", "--force"],
    ["quantize", "m.onnx", "--calib", "d", "--for", "cpu", "--exclude", "Conv", "--rgb", "--resize", "letterbox",
     "--pad-value", "114", "--metric", "task.py:score", "--min-metric", "0.9"],
    ["build", "m.onnx", "--int8", "--calib", "d", "--explicit", "--batch-sizes", "1,8", "--workspace", "2",
     "--equalize", "off", "--batch-axis", "x:0", "--algo", "mse"],
])
def test_the_options_given_parse_back_to_the_same_values(words):
    parser = build_parser()
    args = parser.parse_args(words)
    again = parser.parse_args([words[0], words[1], "--calib", "d", *given_options(args, skip=("calib",))])
    assert vars(again) == vars(args)


def test_the_budget_command_keeps_the_users_options_but_not_a_builds_cache():
    """A build that wrote --cache reads it as it is next time: the budget would not run, so the hint leaves it out."""
    parser = build_parser()
    args = parser.parse_args(["build", "m.onnx", "--int8", "--calib", "d", "--cache", "m.calib.cache", "--scale",
                              "1/127.5", "--mean", "1"])
    command = shlex.split(budget_command_from_args(args, "build"))
    assert command[:5] == ["trtq", "build", "m.onnx", "--calib", "d"] and command[-2:] == ["--max-drop", "1"]
    assert "--cache" not in command and {"--int8", "1/127.5"} <= set(command)
    assert budget_command_from_args(parser.parse_args(["calibrate", "m.onnx", "--calib", "d", "--max-drop", "2"]),
                                    "calibrate") == ""
