"""TensorRT calibration cache files and trtq's JSON sidecar.

Cache format (what ``IInt8Calibrator.write_calibration_cache`` produces)::

    TRT-<version>-<Algorithm>
    <tensor name>: <8 hex digits: big-endian float32 bits of scale = amax / 127>

TensorRT silently ignores a cache it finds incompatible, so every cache trtq writes
gets a sidecar ``<cache>.json`` recording which model, data and algorithm produced
it; :func:`read_cache` refuses a cache whose sidecar does not match the model.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import __version__, defaults
from .errors import CacheError
from .fileio import write_files_atomic

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Header algorithm names TensorRT uses (``CalibrationAlgoType``).
#: auto, percentile and mse have no TensorRT calibrator of their own; their caches carry
#: the EntropyCalibration2 header because that is the calibrator trtexec and DeepStream
#: instantiate (TensorRT reads a cache only when its header names the calibrator's own
#: algorithm), so the cache is accepted there, and trtq's implicit-path build hands it to
#: its IInt8EntropyCalibrator2 subclass. The sidecar records the real algorithm.
TRT_ALGORITHM_NAMES = {
    "auto": "EntropyCalibration2",
    "entropy": "EntropyCalibration2",
    "minmax": "MinMaxCalibration",
    "percentile": "EntropyCalibration2",
    "mse": "EntropyCalibration2",
}
KNOWN_HEADER_ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")

SIDECAR_FORMAT = "trtq-calibration-sidecar"
SIDECAR_VERSION = 1

#: The smallest amax written: TensorRT must never see a zero scale (an all-zero tensor).
MIN_AMAX = 1e-7
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9_]+)$")
_INT8_MAX = np.float32(127.0)


def encode_scale(amax: float) -> str:
    """amax -> 8 hex digits of the float32 scale amax/127 (amax 1.0 -> ``3c010204``)."""
    if not math.isfinite(amax) or amax < 0:
        raise CacheError(f"cannot encode amax {amax!r}: it must be a finite, non-negative number")
    scale = np.float32(max(amax, MIN_AMAX)) / _INT8_MAX
    return struct.pack(">f", float(scale)).hex()


def decode_scale(hex_digits: str) -> float:
    """8 hex digits -> the float32 scale they hold."""
    if not re.fullmatch(r"[0-9a-fA-F]{1,8}", hex_digits):
        raise ValueError(f"{hex_digits!r} is not a hex float")
    return float(struct.unpack(">f", bytes.fromhex(hex_digits.rjust(8, "0")))[0])


def trt_version_int(version: str) -> int:
    """'8.6.1' -> 8601, '10.3.0' -> 100300 (the encoding TensorRT puts in cache headers)."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    major, minor, patch = parts[:3]
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def trt_version_text(version: int) -> str:
    """Inverse of :func:`trt_version_int`, for messages."""
    if version >= 100000:
        return f"{version // 10000}.{version // 100 % 100}.{version % 100}"
    return f"{version // 1000}.{version // 100 % 10}.{version % 100}"


@dataclass
class CalibrationCache:
    """A parsed cache: header fields and scale per tensor (file order kept)."""

    trt_version: int
    algorithm: str
    scales: Dict[str, float]
    sidecar: Optional[dict] = None
    path: Optional[Path] = None

    @property
    def amax(self) -> Dict[str, float]:
        return {name: float(np.float32(np.float64(scale) * 127.0)) if abs(scale) < 2e36 else float(scale) * 127.0
                for name, scale in self.scales.items()}

    @property
    def header(self) -> str:
        return f"TRT-{self.trt_version}-{self.algorithm}"

    def to_bytes(self) -> bytes:
        return _render(self.trt_version, self.algorithm,
                       ((name, struct.pack(">f", float(np.float32(scale))).hex()) for name, scale in self.scales.items()))

    def restamped(self, trt_version: int, algorithm: str) -> "CalibrationCache":
        """The same scales under another header (TensorRT skips a cache whose header differs)."""
        return CalibrationCache(trt_version, algorithm, dict(self.scales), self.sidecar, self.path)


def format_cache(amax: Mapping[str, float], trt_version: int, algorithm: str) -> bytes:
    """Cache file bytes for ``amax`` per tensor."""
    if algorithm not in KNOWN_HEADER_ALGORITHMS:
        algorithm = TRT_ALGORITHM_NAMES.get(algorithm, algorithm)
    return _render(trt_version, algorithm, ((name, encode_scale(float(value))) for name, value in amax.items()))


def _render(trt_version: int, algorithm: str, hex_scales) -> bytes:
    """The one writer of the text format: header, then ``name: 8 hex digits`` per tensor."""
    lines = [f"TRT-{int(trt_version)}-{algorithm}"]
    for name, digits in hex_scales:
        if "\n" in name:
            raise CacheError(f"tensor name {name!r} contains a newline; TensorRT caches cannot hold it")
        lines.append(f"{name}: {digits}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse_cache(data: bytes, source: str = "cache", check_scales: bool = False) -> CalibrationCache:
    """Parse cache bytes; names may hold spaces, brackets and colons (split on the last ': ').

    A tensor listed twice is an error (which line would TensorRT use?). With
    ``check_scales`` (files a user hands trtq), so is a scale that is zero, negative,
    NaN or infinite: TensorRT would quantize that tensor to nothing or garbage.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CacheError(f"{source} is not a TensorRT calibration cache (not text)") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise CacheError(f"{source} is empty")
    match = _HEADER.match(lines[0].strip())
    if not match:
        raise CacheError(f"{source} does not start with a TensorRT cache header like 'TRT-100300-EntropyCalibration2' "
                         f"(found {lines[0][:60]!r})")
    scales: Dict[str, float] = {}
    first_line: Dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, digits = line.rpartition(": ")
        if not sep or not name:
            raise CacheError(f"{source} line {number}: expected '<tensor>: <8 hex digits>', found {line[:80]!r}")
        if name in first_line:
            raise CacheError(f"{source} line {number}: tensor {name!r} is listed again (first on line "
                             f"{first_line[name]}); keep one line per tensor, or recalibrate")
        try:
            scale = decode_scale(digits.strip())
        except ValueError:
            raise CacheError(f"{source} line {number}: {digits.strip()!r} is not 8 hex digits") from None
        if check_scales and not (math.isfinite(scale) and scale > 0):
            what = "zero" if scale == 0 else ("negative" if scale < 0 else "not a finite number")
            raise CacheError(f"{source} line {number}: the scale of {name!r} ({digits.strip()}) is {what} "
                             f"({scale:g}); a scale must be a positive finite amax/127. Recalibrate, or fix that line")
        if check_scales and len(digits.strip()) != 8:
            raise CacheError(f"{source} line {number}: the scale of {name!r} has {len(digits.strip())} hex digits "
                             f"({digits.strip()!r}), not 8: the line was cut short. Recalibrate, or fix that line")
        first_line[name] = number
        scales[name] = scale
    return CalibrationCache(int(match.group(1)), match.group(2), scales)


#: Plausible amax (= scale * 127) of a cache without a sidecar: below it the scale is subnormal or
#: nearly so (a truncated or mistyped line); at or above ``defaults.UNQUANTIZED_ABS`` trtq itself
#: would have left the tensor in float.
PLAUSIBLE_AMAX = (1e-30, defaults.UNQUANTIZED_ABS)


def implausible_scales(cache: "CalibrationCache") -> List[str]:
    """Why some scales of ``cache`` cannot come from a calibration (subnormal, or amax beyond
    :data:`PLAUSIBLE_AMAX`); checked where no sidecar vouches for the cache."""
    low, high = PLAUSIBLE_AMAX
    problems = []
    for name, scale in cache.scales.items():
        amax = float(scale) * float(_INT8_MAX)
        if scale < np.finfo(np.float32).tiny:
            problems.append(f"the scale of {name!r} ({scale:.3g}) is subnormal")
        elif not low <= amax < high:
            problems.append(f"the scale of {name!r} ({scale:.3g}, amax {amax:.3g}) is outside the plausible amax "
                            f"range {low:g} to {high:g}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return [problems[0] + more]
    return []


def sidecar_path(cache_path: PathLike) -> Path:
    return Path(str(cache_path) + ".json")


def make_sidecar(
    *,
    model_path: PathLike,
    model_sha256: str,
    inputs: Sequence[dict],
    algorithm: str,
    amax: Mapping[str, float],
    trt_version: int,
    data: Optional[dict] = None,
    algorithm_options: Optional[dict] = None,
    fingerprint: Optional[dict] = None,
) -> dict:
    """The JSON record that ties a cache to the model and data that produced it.

    ``fingerprint`` (:func:`trtq.graph.model.model_fingerprint`) lets the check accept
    the same model re-saved by another tool (its bytes change, the calibration does not).
    """
    model_record = {"file": Path(model_path).name, "sha256": model_sha256, "inputs": list(inputs)}
    if fingerprint is not None:
        model_record["fingerprint"] = fingerprint
    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "trtq_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model_record,
        "data": data or {},
        "algorithm": {"name": algorithm, **(algorithm_options or {})},
        "header": {"trt_version": int(trt_version), "algorithm": TRT_ALGORITHM_NAMES.get(algorithm, algorithm)},
        "amax": {name: float(value) for name, value in amax.items()},
    }


def sidecar_bytes(sidecar: dict) -> bytes:
    """The one serialization of a sidecar (indented JSON, newline-terminated)."""
    from .jsonio import dumps

    return dumps(sidecar).encode("utf-8")


def write_cache(
    path: PathLike,
    amax: Mapping[str, float],
    *,
    algorithm: str = defaults.ALGORITHM,
    trt_version: Optional[int] = None,
    sidecar: Optional[dict] = None,
    model: Optional[Tuple[PathLike, bytes]] = None,
) -> List[Path]:
    """Write the cache (and its sidecar when given) atomically; returns the files written.

    ``model``: ``(path, bytes)`` of the model the cache belongs to when trtq made it (an ``--equalize``
    rewrite), written with them: all three or none.

    ``trt_version``: the TensorRT version the header names (``100300`` for 10.3.0); by default
    :data:`trtq.defaults.TRT_VERSION` (the calibrate flow passes the running TensorRT's,
    :func:`trtq.backend.default_trt_version`)."""
    if trt_version is None:
        trt_version = defaults.TRT_VERSION
    header_algorithm = TRT_ALGORITHM_NAMES.get(algorithm, algorithm)
    payload = format_cache(amax, trt_version, header_algorithm)
    files = {Path(model[0]): model[1]} if model is not None else {}
    if sidecar is not None:  # renamed first: a cache never sits beside the sidecar of an older cache
        files[sidecar_path(path)] = sidecar_bytes(sidecar)
    files[Path(path)] = payload
    written = write_files_atomic(files)
    return written


def read_cache(path: PathLike) -> CalibrationCache:
    """Read a cache file and its sidecar (if any). Use :func:`check_cache_matches` before trusting it."""
    path = Path(path)
    if not path.exists():
        raise CacheError(f"calibration cache {path} does not exist")
    if path.is_dir():
        raise CacheError(f"calibration cache path {path} is a folder")
    from .fileio import folder_lock
    from .jsonio import parse

    side = sidecar_path(path)
    _regular(path, "calibration cache")
    with folder_lock(path.parent if str(path.parent) else ".", shared=True):  # never half of a pair being replaced
        data = path.read_bytes()
        side_data = None
        if os.path.lexists(side):
            _regular(side, "sidecar")
            with open(side, "rb") as handle:
                side_data = handle.read(MAX_SIDECAR_BYTES + 1)
    cache = parse_cache(data, source=str(path), check_scales=True)
    cache.path = path
    if side_data is not None:
        hint = "delete it or recalibrate"
        document = parse(side_data, f"sidecar {side}", error=CacheError, hint=hint)
        if not isinstance(document, dict) or document.get("format") != SIDECAR_FORMAT:
            raise CacheError(f"{side} is not a trtq sidecar (no 'format': '{SIDECAR_FORMAT}'); {hint}")
        cache.sidecar = parse(side_data, f"sidecar {side}", schema=SIDECAR_SCHEMA, error=CacheError, hint=hint)
        version = cache.sidecar.get("format_version")
        if version is not None and version > SIDECAR_VERSION:
            log.warning("sidecar %s has format_version %d, newer than the %d this trtq %s reads: what the newer "
                        "trtq recorded beyond that is ignored; upgrade trtq (pip install -U trtq) to use it all",
                        side, version, SIDECAR_VERSION, __version__)
    return cache


#: The largest sidecar read (one amax per tensor and per-output verdicts: far below this).
MAX_SIDECAR_BYTES = 64 << 20


def _regular(path: Path, what: str) -> None:
    from .fileio import check_regular

    check_regular(path, f"{what} {path}", CacheError, "give the file itself")


def _sidecar_schema():
    from .jsonio import List as ListOf
    from .jsonio import Map, Opt

    number = "number"
    verdict = {"samples?": "int", "held_back?": "bool", "form?": "str", "snr_db?": number, "cosine?": number,
               "worst?": Opt("str"), "poor?": "bool", "thresholds?": Map(number), "line?": "str",
               "warning?": Opt("str"), "outputs?": ListOf(Map("any"))}
    return {
        "format": "str",
        "format_version?": "int",
        "trtq_version?": "str",
        "created?": "str",
        "model": {"file?": "str", "sha256?": "str",
                  "inputs?": ListOf({"name": "str", "shape": Opt(ListOf(Opt("int"))), "dtype?": Opt("str"),
                                     "batch_axis?": Opt("int")}),
                  "fingerprint?": Opt({"version?": "int", "graph?": "str", "nodes?": "int",
                                       "outputs?": ListOf("str"), "inputs?": ListOf("any"),
                                       "initializers?": Map("str")})},
        "data?": {"kind?": Opt("str"), "source?": Opt("str"), "preprocess?": Opt(Map("any"))},
        "algorithm?": {"name?": "str", "unquantized?": Map("str"), "overrides?": Map("str")},
        "header?": {"trt_version?": "int", "algorithm?": "str"},
        "amax?": Map(number),
        "verdict?": Opt(verdict),
        "mixed_precision?": Opt({"float_layers?": ListOf("str"), "source?": "str", "target?": Map(number),
                                 "reached?": Opt(number)}),
    }


#: What a sidecar must look like for trtq to use it (:mod:`trtq.jsonio` schema; unknown fields allowed).
SIDECAR_SCHEMA = _sidecar_schema()


def cache_problems(cache: CalibrationCache, model, model_sha256: str, tensor_names: Iterable[str]) -> List[str]:
    """Reasons the cache does not belong to this model (empty list: it does)."""
    from .graph.model import fingerprint_changes, model_fingerprint
    from .graph.signature import input_specs

    problems: List[str] = []
    known = set(tensor_names)
    side = cache.sidecar
    if side is not None:
        recorded = side.get("model", {})
        saved = recorded.get("fingerprint")
        if recorded.get("sha256") and recorded["sha256"] != model_sha256:
            changes = fingerprint_changes(saved, model_fingerprint(model)) if isinstance(saved, dict) else None
            if changes is None:  # a sidecar without a fingerprint: the file bytes are all there is
                problems.append(
                    f"it was calibrated for model '{recorded.get('file', '?')}' (sha256 {recorded['sha256'][:12]}…), "
                    f"not this one (sha256 {model_sha256[:12]}…)"
                )
            elif changes:
                problems.append(f"it was calibrated for another version of model '{recorded.get('file', '?')}': "
                                + "; ".join(changes))
            else:
                log.info("%s: the model file changed (re-saved?) but its graph, tensor names, weights and inputs "
                         "are those the cache was calibrated for", cache.path or "cache")
        inputs_now = [_input_record(spec) for spec in input_specs(model)]
        if recorded.get("inputs") is not None and _comparable_inputs(recorded["inputs"]) != _comparable_inputs(inputs_now):
            problems.append(f"the model inputs differ: cache has {_inputs_text(recorded['inputs'])}, "
                            f"model has {_inputs_text(inputs_now)}")
        side_amax = side.get("amax") or {}
        edited = [n for n, scale in cache.scales.items()
                  if n in side_amax and _finite_amax(side_amax[n]) and decode_scale(encode_scale(side_amax[n])) != scale]
        if edited:
            problems.append(f"the cache and its sidecar disagree on {len(edited)} tensor(s) (e.g. {edited[0]!r}); "
                            "the cache was edited or the sidecar belongs to another cache")
    missing = [name for name in cache.scales if name not in known]
    if cache.scales and len(missing) == len(cache.scales):
        problems.append(f"none of its {len(cache.scales)} tensor names occur in the model (e.g. {missing[0]!r})")
    return problems


def check_cache_matches(cache: CalibrationCache, model, model_sha256: str, tensor_names: Iterable[str],
                        force: bool = False) -> None:
    """Raise :class:`CacheError` (or warn, with ``force``) when the cache belongs to another model."""
    if cache.sidecar is None:  # nothing vouches for its scales: they must at least be ones a calibration gives
        implausible = implausible_scales(cache)
        if implausible:
            raise CacheError(f"refusing cache {cache.path}: {implausible[0]}; it has no trtq sidecar, and no "
                             "calibration gives such a scale (a truncated or hand-edited line?). Recalibrate")
    problems = cache_problems(cache, model, model_sha256, tensor_names)
    if cache.sidecar is None:
        log.warning("%s has no trtq sidecar (%s): model checks skipped, only its tensor names were compared with "
                    "the model", cache.path or "cache", sidecar_path(cache.path or "cache").name)
    if not problems:
        return
    reason = "; ".join(problems)
    if force:
        log.warning("using cache %s despite: %s (--force)", cache.path, reason)
        return
    raise CacheError(f"refusing cache {cache.path}: {reason}. Recalibrate for this model, or pass --force to use it anyway")


def _finite_amax(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def _input_record(spec) -> dict:
    axis = getattr(spec, "batch_axis", 0)
    return {"name": spec.name, "shape": [d if isinstance(d, int) else None for d in spec.shape], "dtype": str(spec.dtype),
            "batch_axis": axis if axis is not None and spec.rank else None}


def recorded_batch_axes(sidecar: Optional[dict]) -> Dict[str, Optional[int]]:
    """The batch axis per input the cache was calibrated with (``{}`` for a sidecar that predates them), so
    every consumer (the TensorRT calibrator, eval of the same data) cuts samples the same way."""
    records = ((sidecar or {}).get("model") or {}).get("inputs") or []
    return {r["name"]: r["batch_axis"] for r in records if isinstance(r, dict) and "batch_axis" in r and "name" in r}


def input_records(specs) -> List[dict]:
    """Sidecar form of model input specs."""
    return [_input_record(s) for s in specs]


def _comparable_inputs(records) -> list:
    return [(r.get("name"), tuple(r.get("shape") or ()), r.get("dtype")) for r in records]


def _inputs_text(records) -> str:
    def dims(r) -> str:
        axis = r.get("batch_axis", 0)
        return "x".join("N" if i == axis and not d else str(d) if d else "?" for i, d in enumerate(r.get("shape") or ()))
    return ", ".join(f"{r.get('name')}[{dims(r)}]" for r in records)


def equalized_model(sidecar: Optional[dict], model_path: PathLike, model_sha256: str,
                    cache_path: Optional[PathLike] = None) -> Optional[Path]:
    """The rewrite of ``model_path`` a cache belongs to, when its sidecar says it was calibrated on it
    (``--equalize``, or kept by auto's equalization trial): the file (beside the model, else beside the cache,
    under the name the sidecar records) whose sha256 is the sidecar's. None when the cache is the model's own.

    Raises :class:`CacheError` when the rewrite is not found: the cache's scales fit it, not the model.
    """
    from .graph.model import file_sha256

    record = (sidecar or {}).get("equalize")
    model = (sidecar or {}).get("model") or {}
    if not isinstance(record, dict) or record.get("source_file_sha256") != model_sha256 or not model.get("sha256"):
        return None
    name = Path(str(model.get("file") or "")).name
    path = Path(model_path)
    places = [path.with_name(path.stem + ".equalized.onnx")]
    if name:
        places += [path.with_name(name)] + ([Path(cache_path).with_name(name)] if cache_path is not None else [])
    for place in dict.fromkeys(places):
        if place.is_file() and file_sha256(place) == model["sha256"]:
            return place
    raise CacheError(f"cache {cache_path or ''} was calibrated on {name or 'the rewrite'} (this model rewritten by "
                     f"--equalize {','.join(record.get('steps') or [])}, sha256 {model['sha256'][:12]}…), which is not "
                     f"beside {path.name}{' or the cache' if cache_path is not None else ''} with that content; put it "
                     "back, or recalibrate")


def model_of_cache(cache: CalibrationCache, model_path: PathLike, model, cache_path: Optional[PathLike] = None):
    """``(path, model, sha256)`` a cache's scales belong to: ``model_path``'s own (``model`` loaded from it), or
    the ``--equalize`` rewrite of it the cache was calibrated on (:func:`equalized_model`), which every consumer
    of the cache (quantize, build, deploy) then uses in its place. Check with :func:`check_cache_matches` after."""
    from .graph.model import file_sha256, load_onnx

    sha = file_sha256(model_path)
    rewrite = equalized_model(cache.sidecar, model_path, sha, cache_path if cache_path is not None else cache.path)
    if rewrite is None:
        return Path(model_path), model, sha
    log.info("%s was calibrated on %s (%s rewritten by --equalize): using that file", cache_path or cache.path,
             rewrite.name, Path(model_path).name)
    return rewrite, load_onnx(rewrite), file_sha256(rewrite)


def float_layers(sidecar: Optional[dict]) -> List[str]:
    """ONNX node names the mixed-precision search left in float (empty when none)."""
    return list(((sidecar or {}).get("mixed_precision") or {}).get("float_layers") or [])
