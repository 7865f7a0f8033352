"""CalibratorCore (the calibrator logic) without TensorRT: fake device memory, real trtq caches."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from backend_fakes import FakeDeviceMemory, Untouchable, batches
from trtq import cache as cache_io
from trtq.backend.calibrator import CalibratorCore, calibrator_class
from trtq.errors import DataError, TrtqError


def make(data, **kwargs):
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("trt_version", 101600)
    kwargs.setdefault("allocator", FakeDeviceMemory())
    return CalibratorCore(data, **kwargs)


def test_pointers_follow_the_order_of_names_and_buffers_are_reused():
    memory = FakeDeviceMemory()
    data = batches(3)
    calibrator = make(data, allocator=memory, shapes={"a": (4, 2, 5), "b": (4, 3)})
    first = calibrator.get_batch(["b", "a"])
    np.testing.assert_array_equal(memory.read(first[0], np.float32, (4, 3)), data[0]["b"])
    np.testing.assert_array_equal(memory.read(first[1], np.float32, (4, 2, 5)), data[0]["a"])
    assert calibrator.get_batch(["b", "a"]) == first
    assert calibrator.get_batch(["a", "b"]) == first[::-1]
    assert calibrator.get_batch(["a", "b"]) is None
    assert len(memory.live) == 2
    with calibrator:
        pass
    assert not memory.live


def test_items_with_inputs_attribute_are_fed():
    class Item:
        def __init__(self, inputs):
            self.inputs = inputs

    calibrator = make([Item(b) for b in batches(1)])
    assert len(calibrator.get_batch(["a", "b"])) == 2


def test_missing_input_is_recorded_and_raised_later():
    calibrator = make(batches(1))
    assert calibrator.get_batch(["a", "c"]) is None
    assert calibrator.get_batch(["a", "b"]) is None, "after an error TensorRT only sees the end of data"
    with pytest.raises(DataError, match="no input 'c'"):
        calibrator.raise_pending()
    calibrator.raise_pending()  # raised once


def test_exceptions_from_the_data_source_are_not_swallowed():
    def broken():
        yield batches(1)[0]
        raise OSError("disk on fire")

    calibrator = make(broken())
    assert calibrator.get_batch(["a", "b"]) is not None
    assert calibrator.get_batch(["a", "b"]) is None
    with pytest.raises(OSError, match="disk on fire"):
        calibrator.raise_pending()


def test_no_full_batch_is_an_error():
    calibrator = make([{"a": np.zeros((2, 2, 5), np.float32), "b": np.zeros((2, 3), np.float32)}])
    assert calibrator.get_batch(["a", "b"]) is None
    with pytest.raises(DataError, match="no batch of the calibration batch size"):
        calibrator.raise_pending()


def test_needs_data_or_cache():
    with pytest.raises(TrtqError, match="--calib"):
        make(None)


def test_cache_means_no_data_is_read_and_is_restamped_when_verified(caplog):
    old = cache_io.parse_cache(cache_io.format_cache({"x": 1.0, "y": 3.0}, 100300, "EntropyCalibration2"))
    calibrator = make(Untouchable(), cache=old, cache_verified=True, trt_version=101600)
    with caplog.at_level(logging.INFO, logger="trtq.backend.calibrator"):
        data = calibrator.read_calibration_cache()
    parsed = cache_io.parse_cache(data)
    assert parsed.header == "TRT-101600-EntropyCalibration2" and parsed.scales == old.scales
    assert "re-stamped" in caplog.text
    same = make(Untouchable(), cache=old, cache_verified=True, trt_version=100300).read_calibration_cache()
    assert same == old.to_bytes()


def test_write_keeps_tensorrt_bytes_and_adds_a_sidecar(tmp_path):
    path = tmp_path / "m.cache"
    payload = cache_io.format_cache({"images": 2.0, "conv: out [1]": 0.25}, 101600, "EntropyCalibration2")
    sidecar = {"model_path": tmp_path / "m.onnx", "model_sha256": "cd" * 32, "inputs": [], "data": {"path": "d"}}
    calibrator = make(batches(1), cache_path=path, sidecar=sidecar)
    calibrator.get_batch(["a", "b"])
    calibrator.write_calibration_cache(memoryview(payload))
    calibrator.raise_pending()
    assert path.read_bytes() == payload
    side = json.loads(cache_io.sidecar_path(path).read_text())
    assert side["model"]["sha256"] == "cd" * 32 and side["data"]["samples"] == 4
    assert side["data"]["calibrated_by"] == "tensorrt"
    assert side["amax"]["images"] == pytest.approx(2.0, rel=1e-6)


def test_write_of_garbage_is_reported(tmp_path):
    calibrator = make(batches(1), cache_path=tmp_path / "c")
    calibrator.write_calibration_cache(b"\xff\xfe not a cache")
    with pytest.raises(Exception, match="cache"):
        calibrator.raise_pending()
    assert not (tmp_path / "c").exists()


def test_percentile_and_mse_caches_load_through_the_entropy_calibrator():
    class FakeTrt:
        __version__ = "10.3.0"

        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        class IInt8MinMaxCalibrator:
            def __init__(self):
                pass

    assert calibrator_class(FakeTrt, "percentile").algorithm == "entropy"
    assert calibrator_class(FakeTrt, "mse").algorithm == "entropy"
    assert calibrator_class(FakeTrt, "minmax").algorithm == "minmax"
    calibrator = calibrator_class(FakeTrt, "entropy")(batches(1), batch_size=4, trt_version=100300,
                                                     allocator=FakeDeviceMemory())
    assert isinstance(calibrator, FakeTrt.IInt8EntropyCalibrator2)
