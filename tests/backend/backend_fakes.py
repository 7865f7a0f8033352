"""Test doubles for the backend: fake device memory (no CUDA needed) and small data sources."""

from __future__ import annotations

from typing import Dict, List

import numpy as np


class FakeBuffer:
    """A 'device' buffer in host memory with a made-up, unique pointer."""

    def __init__(self, memory: "FakeDeviceMemory", nbytes: int, ptr: int):
        self.memory, self.nbytes, self.ptr = memory, nbytes, ptr
        self.data = bytearray(nbytes)
        self.copies = 0

    def copy_from_host(self, array, stream=None):
        raw = np.ascontiguousarray(array).tobytes()
        assert len(raw) <= self.nbytes, "copy larger than the buffer"
        self.data[: len(raw)] = raw
        self.copies += 1
        return self

    def copy_to_host(self, out, stream=None):
        assert out.nbytes <= self.nbytes, "read larger than the buffer"
        out[...] = np.frombuffer(bytes(self.data[: out.nbytes]), dtype=out.dtype).reshape(out.shape)
        return out

    def free(self):
        assert self.ptr in self.memory.live, f"double free of 0x{self.ptr:x}"
        del self.memory.live[self.ptr]
        self.memory.freed.append(self.ptr)


class FakeDeviceMemory:
    """The allocator injected into calibrators on a CPU: ``memory(nbytes) -> FakeBuffer``."""

    def __init__(self):
        self.live: Dict[int, FakeBuffer] = {}
        self.freed: List[int] = []
        self.sizes: Dict[int, int] = {}  # every allocation ever made: pointer -> bytes
        self._next = 0x7F0000000000

    def __call__(self, nbytes: int) -> FakeBuffer:
        buffer = FakeBuffer(self, nbytes, self._next)
        self.live[buffer.ptr] = buffer
        self.sizes[buffer.ptr] = nbytes
        self._next += max(256, (nbytes + 255) // 256 * 256)
        return buffer

    def read(self, ptr: int, dtype, shape) -> np.ndarray:
        buffer = self.live[ptr]
        count = int(np.prod(shape))
        return np.frombuffer(bytes(buffer.data), dtype=dtype, count=count).reshape(shape)


def batches(count: int, batch_size: int = 4, seed: int = 0, extra_short: bool = False):
    """``count`` batches of two inputs, 'b' listed before 'a' (get_batch must follow TensorRT's order)."""
    rng = np.random.default_rng(seed)
    out = [{"b": rng.normal(size=(batch_size, 3)).astype(np.float32),
            "a": rng.normal(size=(batch_size, 2, 5)).astype(np.float32)} for _ in range(count)]
    if extra_short:
        out.append({"b": np.zeros((1, 3), np.float32), "a": np.zeros((1, 2, 5), np.float32)})
    return out


class Untouchable:
    """A data source that fails the test if anything reads it (a valid cache means no data is read)."""

    def __iter__(self):
        raise AssertionError("calibration data was read although a valid cache was given")
