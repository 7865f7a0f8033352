"""TensorRT implicit-INT8 calibrators (TensorRT 8.6-10.x) fed by trtq data sources.

:class:`CalibratorCore` holds all the logic and needs neither TensorRT nor CUDA: the
device memory comes from an injected ``allocator`` (by default
:func:`trtq.backend.cuda.allocate`), so the tests run it on a CPU with a fake one.
The TensorRT classes are built from it once per TensorRT module by
:func:`calibrator_classes` (a pybind11 base must exist when a class is defined, and
TensorRT is imported lazily); ``from trtq.backend.calibrator import EntropyCalibrator``
works wherever TensorRT is importable.

Behaviour (read against Polygraphy's ``backend/trt/calibrator.py``):

- the TensorRT base ``__init__`` is always called (without it TensorRT segfaults);
- ``get_batch(names)`` returns one device pointer per name, in the order of ``names``,
  then ``None`` at the end of the data; one device buffer per input, reused; float inputs are
  fed as float32 (what TensorRT reads, FP16 network inputs included), integer inputs in the
  network's type (``input_dtypes``);
- a trtq cache (``--cache``) is handed to TensorRT and no data is read at all.
  TensorRT silently ignores a cache whose header names another TensorRT version or
  algorithm, so a cache whose sidecar shows it was made for this model is handed over
  re-stamped with the running version and this calibrator's algorithm (and that is logged);
- TensorRT's own cache is written through :mod:`trtq.cache` (same format, plus sidecar);
- an exception inside ``get_batch`` would be taken by TensorRT for "end of data" and
  the engine silently calibrated on part of the data: it is recorded instead, and
  :meth:`CalibratorCore.raise_pending` (called by the build after TensorRT returns)
  raises it;
- :meth:`CalibratorCore.close` (or ``with``) frees the device memory.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import cache as cache_io
from ..errors import DataError, TrtqError
from ..progress import ProgressCallback, no_progress

log = logging.getLogger(__name__)

#: trtq algorithm name -> (TensorRT base class, CalibrationAlgoType member)
ALGORITHMS: Dict[str, Tuple[str, str]] = {
    "entropy": ("IInt8EntropyCalibrator2", "ENTROPY_CALIBRATION_2"),
    "minmax": ("IInt8MinMaxCalibrator", "MINMAX_CALIBRATION"),
}
#: Public class names, per algorithm.
CLASS_NAMES = {"entropy": "EntropyCalibrator", "minmax": "MinMaxCalibrator"}

Allocator = Callable[[int], object]  # nbytes -> buffer with .ptr, .nbytes, .copy_from_host(array), .free()


class CalibratorCore:
    """The calibrator logic, independent of TensorRT (mixed into the TensorRT base class).

    ``batches``: an iterable of ``{input name: array}`` batches (a trtq DataSource, or
    items with an ``.inputs`` dict); may be ``None`` when ``cache`` is given.
    ``shapes``: the exact shape per input TensorRT calibrates with (the calibration
    profile); a shorter last batch is skipped, any other mismatch is an error.
    ``batch_axes``: per input, the axis that counts samples (default 0; ``None`` for a
    scalar or configuration input, which is copied as it is with every batch).
    ``cache``: a :class:`trtq.cache.CalibrationCache` already checked against the model
    (``cache_verified``: its sidecar matched, so re-stamping it is safe).
    ``cache_path``: where TensorRT's cache is written (with ``sidecar`` fields).
    """

    algorithm = "entropy"
    _trt_base = None          # the TensorRT base class, set on the built classes
    _trt_algorithm = None     # CalibrationAlgoType member name of that class

    def __init__(
        self,
        batches: Optional[Iterable] = None,
        *,
        batch_size: int,
        trt_version: int,
        shapes: Optional[Mapping[str, Sequence[int]]] = None,
        cache: Optional[cache_io.CalibrationCache] = None,
        cache_verified: bool = False,
        cache_path: Optional[Path] = None,
        sidecar: Optional[dict] = None,
        allocator: Optional[Allocator] = None,
        progress: ProgressCallback = no_progress,
        total_samples: Optional[int] = None,
        input_dtypes: Optional[Mapping[str, np.dtype]] = None,
        batch_axes: Optional[Mapping[str, Optional[int]]] = None,
    ):
        if self._trt_base is not None:
            # Must run for every pybind11 trampoline class, or TensorRT segfaults calling back.
            self._trt_base.__init__(self)
        if batches is None and cache is None:
            raise TrtqError("INT8 calibration needs calibration data (--calib) or a calibration cache (--cache)")
        if batch_size < 1:
            raise TrtqError(f"calibration batch size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.trt_version = int(trt_version)
        self.shapes = {name: tuple(int(d) for d in shape) for name, shape in (shapes or {}).items()}
        self.cache = cache
        self.cache_verified = cache_verified
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.sidecar = dict(sidecar or {})
        self.progress = progress
        self.total_samples = total_samples
        self.input_dtypes = {name: np.dtype(d) for name, d in (input_dtypes or {}).items()}
        #: per input, the axis that counts samples (default 0; None: a scalar or configuration input, fed as it is)
        self.batch_axes = dict(batch_axes or {})
        self._batches = batches
        self._iterator: Optional[Iterator] = None
        self._allocator = allocator
        self._buffers: Dict[str, object] = {}
        self.error: Optional[BaseException] = None
        self.batches_read = 0
        self.samples_read = 0
        self.skipped_batches = 0
        self.cache_handed_over = False
        self.cache_written: List[Path] = []

    # -- TensorRT's interface ------------------------------------------------------------

    def get_batch_size(self) -> int:
        return self.batch_size

    def get_batch(self, names: Sequence[str], *unused) -> Optional[List[int]]:
        """Device pointers of the next batch, in the order of ``names``; ``None`` at the end."""
        if self.error is not None:
            return None
        try:
            return self._next_pointers(list(names))
        except BaseException as exc:  # noqa: BLE001 - re-raised by raise_pending() after the build
            self.error = exc
            log.debug("calibration stopped by %s: %s", type(exc).__name__, exc)
            return None

    def read_calibration_cache(self, *unused) -> Optional[bytes]:
        """The cache bytes for TensorRT (re-stamped when verified and stale), or ``None`` to calibrate."""
        if self.cache is None:
            return None
        cache = self.cache
        header_algorithm = cache_io.TRT_ALGORITHM_NAMES[self.algorithm]
        if (cache.trt_version, cache.algorithm) != (self.trt_version, header_algorithm):
            stale = f"{cache.header} (running TensorRT wants TRT-{self.trt_version}-{header_algorithm})"
            if self.cache_verified:
                log.info("calibration cache %s has header %s; its sidecar matches this model, so it is handed to "
                         "TensorRT re-stamped as TRT-%s-%s", cache.path or "", stale, self.trt_version,
                         header_algorithm)
                cache = cache.restamped(self.trt_version, header_algorithm)
            else:
                log.warning("calibration cache %s has header %s and no trtq sidecar to vouch for it; TensorRT may "
                            "ignore it and calibrate from data", cache.path or "", stale)
        self.cache_handed_over = True
        return cache.to_bytes()

    def write_calibration_cache(self, data, *unused) -> None:
        """Keep TensorRT's cache (format checked by :mod:`trtq.cache`) and write it with its sidecar."""
        try:
            payload = bytes(data)
            parsed = cache_io.parse_cache(payload, source="the cache TensorRT wrote")
            if self.cache_path is None:
                return
            if self.cache_handed_over and self.samples_read == 0:
                log.debug("TensorRT echoed the cache it was given; %s is left as it is", self.cache_path)
                return
            files = {}
            if self.sidecar:
                sidecar = cache_io.make_sidecar(algorithm=self.algorithm, amax=parsed.amax,
                                                trt_version=parsed.trt_version, **self.sidecar)
                sidecar["data"] = {**sidecar.get("data", {}), "samples": self.samples_read,
                                   "calibrated_by": "tensorrt"}
                files[cache_io.sidecar_path(self.cache_path)] = cache_io.sidecar_bytes(sidecar)
            files[self.cache_path] = payload  # TensorRT's bytes as they are: no float re-rounding
            from ..fileio import write_files_atomic

            self.cache_written = write_files_atomic(files)
            log.info("wrote calibration cache %s (%d tensors)", self.cache_path, len(parsed.scales))
        except BaseException as exc:  # noqa: BLE001 - TensorRT cannot take an exception here
            self.error = self.error or exc

    # -- trtq's side -----------------------------------------------------------------------

    def raise_pending(self) -> None:
        """Raise what stopped calibration early (called after TensorRT's build returns)."""
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def close(self) -> None:
        """Free the device buffers."""
        buffers, self._buffers = list(self._buffers.values()), {}
        for buffer in buffers:
            buffer.free()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def feed_dtype(self, name: str, given: np.dtype) -> np.dtype:
        """What TensorRT reads for input ``name``: float32 for every float input (FP16/BF16 included, as
        TensorRT requires), else the network input's integer type (8.6 turns INT64 inputs into INT32)."""
        given = np.dtype(given)
        wanted = self.input_dtypes.get(name)
        if given.kind == "f" or (wanted is not None and wanted.kind == "f"):
            return np.dtype(np.float32)
        return wanted if wanted is not None else given

    def _allocate(self, nbytes: int):
        if self._allocator is None:
            from .cuda import allocate

            self._allocator = allocate
        return self._allocator(nbytes)

    def _next_batch(self) -> Optional[Mapping[str, np.ndarray]]:
        from ..ort import batch_inputs

        if self._batches is None:  # a cache TensorRT did not accept, and no data to fall back on
            raise DataError("TensorRT did not accept the calibration cache and no calibration data was given "
                            "(--calib); recalibrate, or check the cache was made for this TensorRT")
        if self._iterator is None:
            self._iterator = iter(self._batches)
        while True:
            try:
                item = next(self._iterator)
            except StopIteration:
                return None
            batch = batch_inputs(item)
            short = self._short_batch(batch)
            if short is None:
                return batch
            self.skipped_batches += 1
            log.info("skipping a calibration batch of %d samples: TensorRT calibrates with batches of exactly %d",
                     short, self.batch_size)

    def _short_batch(self, batch: Mapping[str, np.ndarray]) -> Optional[int]:
        """The sample count of a batch smaller than the calibration batch size, else ``None``."""
        for name, array in batch.items():
            shape = np.shape(array)
            axis = self.batch_axes.get(name, 0)
            if axis is None or len(shape) <= axis:
                continue
            rest = shape[:axis] + shape[axis + 1:]
            want = self.shapes.get(name)
            if shape[axis] < self.batch_size and (want is None or tuple(want[:axis]) + tuple(want[axis + 1:]) == rest):
                return int(shape[axis])
        return None

    def _next_pointers(self, names: List[str]) -> Optional[List[int]]:
        batch = self._next_batch()
        if batch is None:
            if self.batches_read == 0:
                raise DataError("the calibration data produced no batch of the calibration batch size "
                                f"({self.batch_size}); give more samples or a smaller --calib-batch-size")
            log.info("calibration data exhausted after %d batches (%d samples)", self.batches_read, self.samples_read)
            return None
        missing = [name for name in names if name not in batch]
        if missing:
            raise DataError(f"calibration batch has no input {missing[0]!r} (it has {', '.join(batch) or 'nothing'})")
        pointers = []
        for name in names:
            # np.require, not np.ascontiguousarray: that makes a scalar input (rank 0) a shape-[1] array
            array = np.require(batch[name], dtype=self.feed_dtype(name, np.asarray(batch[name]).dtype),
                               requirements="C")
            expected = self.shapes.get(name)
            if expected is not None and tuple(array.shape) != expected:
                raise DataError(f"calibration input {name!r} has shape {list(array.shape)}, but TensorRT calibrates "
                                f"with {list(expected)} (the calibration profile)")
            buffer = self._buffers.get(name)
            if buffer is None:
                buffer = self._buffers[name] = self._allocate(array.nbytes)
            elif array.nbytes > buffer.nbytes:
                raise DataError(f"calibration input {name!r} grew from {buffer.nbytes} to {array.nbytes} bytes "
                                "between batches; every batch must have the same shape")
            buffer.copy_from_host(array)
            pointers.append(int(buffer.ptr))
        self.batches_read += 1
        self.samples_read += self.batch_size
        self.progress(self.samples_read, self.total_samples)
        return pointers


@functools.lru_cache(maxsize=None)
def calibrator_classes(trt) -> Dict[str, type]:
    """``{"entropy": EntropyCalibrator, "minmax": MinMaxCalibrator}`` subclassing ``trt``'s bases (built once)."""
    classes = {}
    for algorithm, (base_name, algo_member) in ALGORITHMS.items():
        base = getattr(trt, base_name, None)
        if base is None:
            from ..errors import BackendUnavailable

            raise BackendUnavailable(f"TensorRT {getattr(trt, '__version__', '?')} has no {base_name}: implicit INT8 "
                                     "calibration was removed in TensorRT 11; trtq uses explicit Q/DQ there")
        name = CLASS_NAMES[algorithm]
        classes[algorithm] = type(name, (CalibratorCore, base), {
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"trtq's {base_name}: {CalibratorCore.__doc__.splitlines()[0]}",
            "algorithm": algorithm,
            "_trt_base": base,
            "_trt_algorithm": algo_member,
        })
    return classes


def calibrator_class(trt, algorithm: str) -> type:
    """The calibrator class for a trtq algorithm; percentile/mse caches load through the entropy one."""
    header = cache_io.TRT_ALGORITHM_NAMES.get(algorithm, algorithm)
    return calibrator_classes(trt)["minmax" if header == "MinMaxCalibration" else "entropy"]


def __getattr__(name: str):
    for algorithm, class_name in CLASS_NAMES.items():
        if name == class_name:
            from . import import_tensorrt

            return calibrator_classes(import_tensorrt())[algorithm]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ALGORITHMS", "CLASS_NAMES", "CalibratorCore", "calibrator_classes", "calibrator_class",
           "EntropyCalibrator", "MinMaxCalibrator"]
