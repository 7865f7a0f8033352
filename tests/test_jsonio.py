"""trtq.jsonio: strict JSON out; bounded, schema-checked JSON in."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trtq import jsonio
from trtq.errors import CacheError, TrtqError


def test_dumps_is_strict_json():
    text = jsonio.dumps({"a": math.inf, "b": [-math.inf, math.nan], "c": np.float32(1.5), "d": np.int64(3)})
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert data == {"a": "inf", "b": ["-inf", "nan"], "c": 1.5, "d": 3}


def test_depth_is_measured_without_parsing_and_strings_do_not_count():
    assert jsonio.nesting_depth(b'{"a": [1, {"b": "[[[[[[["}]}') == 3
    assert jsonio.nesting_depth(b'"\\\\"') == 0
    deep = b"[" * 200000 + b"]" * 200000
    with pytest.raises(TrtqError, match="nests 200000 levels deep"):
        jsonio.parse(deep, "report r.json")


def test_schema_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"model": {"inputs": [{"name": "x", "shape": [1, "3"]}]}}))
    schema = {"model": {"inputs?": jsonio.List({"name": "str", "shape": jsonio.List(jsonio.Opt("int"))})}}
    with pytest.raises(CacheError, match=r"sidecar .*s.json: 'model.inputs\[0\].shape\[1\]' must be an integer, "
                                         r"found a string"):
        jsonio.read_json(path, "sidecar", schema, CacheError)


@pytest.mark.parametrize("document,words", [("[]", "must be an object, found a list"),
                                            ("null", "must be an object, found null"),
                                            ('{"n": 1}', "'model' is missing")])
def test_schema_refuses_the_wrong_document(tmp_path, document, words):
    path = tmp_path / "d.json"
    path.write_text(document)
    with pytest.raises(TrtqError, match=words):
        jsonio.read_json(path, schema={"model": "any"})


def test_numbers_written_as_strings_or_null_read_back_as_floats_and_bare_infinity_is_still_read():
    value = jsonio.parse(b'{"a": "inf", "b": "-inf", "c": null, "d": Infinity, "e": 2}', "x",
                         schema={"a": "number", "b": "number", "c": "number", "d": "number", "e": "number"})
    assert value["a"] == math.inf and value["b"] == -math.inf and math.isnan(value["c"]) and value["d"] == math.inf
    assert value["e"] == 2.0 and isinstance(value["e"], float)


def test_non_regular_and_missing_files_are_one_error(tmp_path):
    import os

    os.mkfifo(tmp_path / "p.json")
    with pytest.raises(TrtqError, match="not a regular file"):
        jsonio.read_json(tmp_path / "p.json")
    with pytest.raises(TrtqError, match="does not exist"):
        jsonio.read_json(tmp_path / "nope.json")
    assert jsonio.try_read_json(tmp_path / "p.json") is None
