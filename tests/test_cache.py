"""TensorRT calibration cache format and sidecar validation."""

from __future__ import annotations

import os
import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from trtq import cache
from trtq.errors import CacheError
from trtq.graph.model import file_sha256


def test_amax_one_encodes_to_documented_bits():
    assert cache.encode_scale(1.0) == "3c010204"


def test_scale_is_float32_amax_over_127_big_endian():
    for amax in (0.5, 3.75, 1234.5, 1e-3):
        expected = struct.pack(">f", float(np.float32(amax) / np.float32(127))).hex()
        assert cache.encode_scale(amax) == expected


def test_zero_amax_never_writes_zero_scale():
    assert cache.decode_scale(cache.encode_scale(0.0)) > 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_non_finite_or_negative_amax_is_refused(bad):
    with pytest.raises(CacheError):
        cache.encode_scale(bad)


@pytest.mark.parametrize(
    "header, version, algorithm",
    [("TRT-8601-EntropyCalibration2", 8601, "EntropyCalibration2"),
     ("TRT-100300-EntropyCalibration2", 100300, "EntropyCalibration2"),
     ("TRT-101100-MinMaxCalibration", 101100, "MinMaxCalibration")],
)
def test_header_styles_parse(header, version, algorithm):
    parsed = cache.parse_cache(f"{header}\ninput: 3c010204\n".encode())
    assert (parsed.trt_version, parsed.algorithm) == (version, algorithm)
    assert parsed.amax["input"] == pytest.approx(1.0, rel=1e-6)


def test_odd_tensor_names_round_trip():
    names = ["conv1/Relu_output_0", "name with spaces", "brackets[0]:(1)", "a: b: c", "::", "x:y: 1"]
    amax = {name: float(i + 1) * 0.37 for i, name in enumerate(names)}
    parsed = cache.parse_cache(cache.format_cache(amax, 100300, "entropy"))
    assert list(parsed.scales) == names
    for name in names:
        assert parsed.amax[name] == pytest.approx(amax[name], rel=1e-6)


def test_every_scale_has_eight_hex_digits():
    text = cache.format_cache({"tiny": 1e-30, "big": 1e30}, 8601, "entropy").decode()
    for line in text.splitlines()[1:]:
        assert len(line.rpartition(": ")[2]) == 8


def test_version_integers():
    assert cache.trt_version_int("8.6.1") == 8601
    assert cache.trt_version_int("10.3.0") == 100300
    assert cache.trt_version_int("10.11.0.33") == 101100
    assert cache.trt_version_text(101100) == "10.11.0"
    assert cache.trt_version_text(8601) == "8.6.1"


@pytest.mark.parametrize("data, fragment", [(b"", "empty"), (b"\xff\xfe", "not text"),
                                            (b"hello\n", "header"), (b"TRT-8601-EntropyCalibration2\nx 12\n", "line 2"),
                                            (b"TRT-8601-EntropyCalibration2\nx: zz\n", "hex")])
def test_malformed_caches_are_refused_with_reason(data, fragment):
    with pytest.raises(CacheError, match=fragment):
        cache.parse_cache(data)


def test_restamp_keeps_scales():
    parsed = cache.parse_cache(cache.format_cache({"a": 2.0}, 8601, "entropy"))
    stamped = cache.parse_cache(parsed.restamped(101100, "EntropyCalibration2").to_bytes())
    assert stamped.header == "TRT-101100-EntropyCalibration2"
    assert stamped.scales == parsed.scales


def _tiny_model(path, weight=1.0):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 4], [weight] * 4)
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
                              "tiny", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    return path


def _write(tmp_path, model_path, amax):
    model = onnx.load(str(model_path))
    from trtq.graph.signature import input_specs

    sidecar = cache.make_sidecar(model_path=model_path, model_sha256=file_sha256(model_path),
                                 inputs=cache.input_records(input_specs(model)), algorithm="entropy",
                                 amax=amax, trt_version=100300)
    path = tmp_path / "m.calib.cache"
    cache.write_cache(path, amax, algorithm="entropy", trt_version=100300, sidecar=sidecar)
    return path


def test_write_then_read_matches_model(tmp_path):
    model_path = _tiny_model(tmp_path / "m.onnx")
    path = _write(tmp_path, model_path, {"x": 1.0, "m": 2.0, "y": 2.0})
    loaded = cache.read_cache(path)
    assert loaded.sidecar["model"]["sha256"] == file_sha256(model_path)
    model = onnx.load(str(model_path))
    cache.check_cache_matches(loaded, model, file_sha256(model_path), ["x", "m", "y"])


def test_cache_for_another_model_is_refused_with_reason(tmp_path):
    path = _write(tmp_path, _tiny_model(tmp_path / "m.onnx"), {"x": 1.0})
    other = _tiny_model(tmp_path / "other.onnx", weight=2.0)
    loaded = cache.read_cache(path)
    with pytest.raises(CacheError, match="calibrated for model 'm.onnx'"):
        cache.check_cache_matches(loaded, onnx.load(str(other)), file_sha256(other), ["x", "m", "y"])
    cache.check_cache_matches(loaded, onnx.load(str(other)), file_sha256(other), ["x", "m", "y"], force=True)


def test_zero_amax_tensor_matches_its_sidecar(tmp_path):
    model_path = _tiny_model(tmp_path / "m.onnx")
    path = _write(tmp_path, model_path, {"x": 1.0, "m": 0.0})
    cache.check_cache_matches(cache.read_cache(path), onnx.load(str(model_path)), file_sha256(model_path), ["x", "m"])


def test_edited_cache_disagrees_with_sidecar(tmp_path):
    model_path = _tiny_model(tmp_path / "m.onnx")
    path = _write(tmp_path, model_path, {"x": 1.0})
    path.write_bytes(cache.format_cache({"x": 5.0}, 100300, "entropy"))
    with pytest.raises(CacheError, match="disagree"):
        cache.check_cache_matches(cache.read_cache(path), onnx.load(str(model_path)), file_sha256(model_path), ["x"])


def test_cache_without_sidecar_needs_known_tensor_names(tmp_path):
    model_path = _tiny_model(tmp_path / "m.onnx")
    path = tmp_path / "trt_made.cache"
    path.write_bytes(cache.format_cache({"foreign": 1.0}, 8601, "entropy"))
    with pytest.raises(CacheError, match="none of its 1 tensor names"):
        cache.check_cache_matches(cache.read_cache(path), onnx.load(str(model_path)), file_sha256(model_path), ["x"])


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "c.cache"

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    cache.write_cache(path, {"x": 1.0}, sidecar={"format": cache.SIDECAR_FORMAT, "amax": {"x": 1.0}})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = os.replace
    calls = []

    def interrupt_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupt_second_rename)
    with pytest.raises(KeyboardInterrupt):
        cache.write_cache(path, {"x": 7.0}, sidecar={"format": cache.SIDECAR_FORMAT, "amax": {"x": 7.0}})
    after = {p.name: p for p in tmp_path.iterdir()}
    assert sorted(after) == sorted(before)  # no temporary files left behind
    assert after["c.cache"].read_bytes() == before["c.cache"]  # the old cache is intact


def test_fingerprint_survives_a_resave_and_names_what_changed():
    import onnx

    import _toys
    from trtq.graph.model import fingerprint_changes, model_fingerprint

    model = _toys.classifier()
    saved = model_fingerprint(model)
    resaved = onnx.shape_inference.infer_shapes(model)
    resaved.doc_string = "touched"
    resaved.producer_name = "another tool"
    assert fingerprint_changes(saved, model_fingerprint(resaved)) == []
    retrained = _toys.classifier(seed=3)
    assert any("weights changed values" in c for c in fingerprint_changes(saved, model_fingerprint(retrained)))
    other_io = _toys.classifier(classes=4)
    changes = fingerprint_changes(saved, model_fingerprint(other_io))
    assert changes and any("weights" in c for c in changes)
    assert fingerprint_changes({"version": 0}, saved) is None  # another recipe: compared by sha256 instead


# -- the pair never tears, strict JSON, plausible scales -------------------------------------

PAIR_WRITER = """
import sys
from trtq import cache
path, tag, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
amax = {f"t{i}": tag + i for i in range(50)}
for _ in range(rounds):
    cache.write_cache(path, amax, algorithm="entropy", trt_version=100300,
                      sidecar={"format": cache.SIDECAR_FORMAT, "model": {}, "amax": amax})
"""

PAIR_READER = """
import sys
from trtq import cache
path, rounds = sys.argv[1], int(sys.argv[2])
torn = 0
for _ in range(rounds):
    table = cache.read_cache(path)
    side = table.sidecar["amax"]
    if any(cache.decode_scale(cache.encode_scale(side[n])) != s for n, s in table.scales.items()):
        torn += 1
print(torn)
"""


def test_two_runs_writing_one_pair_never_tear_it(tmp_path):
    """Two processes write the same cache + sidecar at once while a third reads: every pair read, and the
    pair left, is one run's cache with that run's sidecar (the folder lock and one rename order)."""
    import subprocess
    import sys

    path = tmp_path / "shared.cache"
    cache.write_cache(path, {"t0": 0.5}, algorithm="entropy", trt_version=100300,
                      sidecar={"format": cache.SIDECAR_FORMAT, "model": {}, "amax": {"t0": 0.5}})
    writers = [subprocess.Popen([sys.executable, "-c", PAIR_WRITER, str(path), str(tag), "150"])
               for tag in (1.0, 100.0)]
    reader = subprocess.run([sys.executable, "-c", PAIR_READER, str(path), "300"], capture_output=True, text=True,
                            timeout=300)
    for writer in writers:
        assert writer.wait(timeout=300) == 0
    assert reader.returncode == 0, reader.stderr
    assert reader.stdout.strip() == "0"
    final = cache.read_cache(path)
    assert {n: cache.decode_scale(cache.encode_scale(v)) for n, v in final.sidecar["amax"].items()} == final.scales
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.cache", "shared.cache.json"]


def test_sidecar_is_strict_json_and_non_finite_numbers_read_back(tmp_path):
    import json
    import math

    path = tmp_path / "c.cache"
    sidecar = {"format": cache.SIDECAR_FORMAT, "model": {}, "amax": {"x": 1.0},
               "verdict": {"snr_db": math.inf, "cosine": math.nan, "line": "l"}}
    cache.write_cache(path, {"x": 1.0}, algorithm="entropy", trt_version=100300, sidecar=sidecar)
    text = (tmp_path / "c.cache.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    verdict = cache.read_cache(path).sidecar["verdict"]
    assert verdict["snr_db"] == math.inf and math.isnan(verdict["cosine"])


@pytest.mark.parametrize("digits,words", [("3c01", "not 8"), ("00000001", "subnormal"),
                                          ("7f000000", "outside the plausible"), ("05000000", "outside the plausible")])
def test_cache_without_sidecar_needs_plausible_scales(tmp_path, digits, words):
    path = tmp_path / "c.cache"
    path.write_text(f"TRT-100300-EntropyCalibration2\nx: {digits}\n")
    with pytest.raises(CacheError, match=words):
        table = cache.read_cache(path)
        cache.check_cache_matches(table, onnx.ModelProto(), "0" * 64, ["x"])
