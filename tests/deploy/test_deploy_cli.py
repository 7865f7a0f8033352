"""trtq deploy on the command line: help without heavy imports, files written through the guard, exit codes."""

from __future__ import annotations

import re

import pytest

from trtq.cli import main


@pytest.mark.parametrize("target", ["triton", "deepstream", "check"])
def test_help_states_each_default_once(target, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as exc:
        main(["deploy", target, "--help"])
    assert exc.value.code == 0
    for line in capsys.readouterr().out.splitlines():
        assert "(default: None)" not in line and not re.search(r"default[^()]*\).*\(default", line, re.I), line


def test_deepstream_fold_end_to_end(yolo_imagenet, tmp_path, capsys):
    model, cache = yolo_imagenet
    config = tmp_path / "ds" / "config_infer.txt"
    assert main(["deploy", "deepstream", str(model), "--cache", str(cache), "-o", str(config)]) == 2
    assert "--fold" in capsys.readouterr().err and not config.parent.exists()  # nothing written, no folder
    assert main(["deploy", "deepstream", str(model), "--cache", str(cache), "-o", str(config), "--fold", "-q"]) == 0
    assert main(["deploy", "check", str(config), "--cache", str(tmp_path / "ds" / "yolo.folded.calib.cache")]) == 0
    assert main(["deploy", "check", str(config), "--cache", str(cache)]) == 2  # the unfolded calibration differs
