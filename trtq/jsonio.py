"""Every JSON document trtq writes or reads: strict on the way out, bounded and checked on the way in.

Writing (:func:`json_safe`, :func:`dumps`): strict JSON that jq, JavaScript and Go parse.
A non-finite number is written as the string ``"inf"``, ``"-inf"`` or ``"nan"`` (never
as a bare ``Infinity``/``NaN``, which is not JSON); a path as its text; a numpy scalar
as a plain number.

Reading (:func:`read_json`): a file is read only when it is a regular file of at most
:data:`MAX_BYTES`, its nesting at most :data:`MAX_DEPTH` levels deep (checked before
parsing: Python's parser would otherwise recurse until it fails), and, with a
``schema``, every field the schema names has the type it says. The error names the
file and the field (``sidecar m.cache.json: 'verdict.snr_db' must be a number, found
a string``). Numbers written as ``"inf"``/``"-inf"``/``"nan"`` (or null) come back as
floats where the schema says ``"number"``; bare ``Infinity``/``NaN`` written by older
versions are still read.

Schemas are plain data (see :func:`check`): ``"str"``, ``"int"``, ``"number"``,
``"bool"``, ``"any"``; ``Opt(s)`` (``s`` or null); ``List(s)``; ``Map(s)`` (any keys,
values ``s``); a ``dict`` of field -> schema (a field ending in ``?`` may be absent;
fields the schema does not name are allowed, so newer files stay readable).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Callable, Optional, Type, Union

import numpy as np

from .errors import TrtqError

PathLike = Union[str, "os.PathLike[str]"]

#: The deepest nesting a JSON document trtq reads may have (trtq's own files reach 6).
MAX_DEPTH = 64
#: The largest JSON document trtq reads.
MAX_BYTES = 64 << 20

_NON_FINITE = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "nan": math.nan, "infinity": math.inf,
               "-infinity": -math.inf}


# --------------------------------------------------------------------------------------------- writing


def json_safe(value: Any) -> Any:
    """Make a value strict-JSON-safe: non-finite floats become ``"inf"``, ``"-inf"`` or ``"nan"``; paths become text."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return json_safe(value.item())  # numpy scalars
    return value


def dumps(data: Any, indent: Optional[int] = 2) -> str:
    """Strict JSON text of ``data`` (see :func:`json_safe`), newline-terminated."""
    return json.dumps(json_safe(data), indent=indent, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------------- schemas


class Opt:
    """``schema`` or null."""

    def __init__(self, schema):
        self.schema = schema


class List:
    """A list whose items match ``schema``."""

    def __init__(self, schema):
        self.schema = schema


class Map:
    """An object with any keys whose values match ``schema``."""

    def __init__(self, schema):
        self.schema = schema


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "true/false", int: "an integer",
               float: "a number", type(None): "null"}


def _kind(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class SchemaMismatch(ValueError):
    """Where (a field path) and what is wrong in a document."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


def _join(where: str, key) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def check(value: Any, schema, where: str = "") -> Any:
    """``value`` checked against ``schema`` (raises :class:`SchemaMismatch`); numbers normalized to floats/ints."""
    if schema == "any":
        return value
    if isinstance(schema, Opt):
        return None if value is None else check(value, schema.schema, where)
    if schema == "str":
        if not isinstance(value, str):
            raise SchemaMismatch(where, f"must be a string, found {_kind(value)}")
        return value
    if schema == "bool":
        if not isinstance(value, bool):
            raise SchemaMismatch(where, f"must be true or false, found {_kind(value)}")
        return value
    if schema == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaMismatch(where, f"must be an integer, found {_kind(value)}")
        return value
    if schema == "number":
        if value is None:
            return math.nan
        if isinstance(value, str) and value.strip().lower() in _NON_FINITE:
            return _NON_FINITE[value.strip().lower()]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaMismatch(where, f"must be a number, found {_kind(value)}")
        return float(value)
    if isinstance(schema, List):
        if not isinstance(value, list):
            raise SchemaMismatch(where, f"must be a list, found {_kind(value)}")
        return [check(item, schema.schema, _join(where, i)) for i, item in enumerate(value)]
    if isinstance(schema, Map):
        if not isinstance(value, dict):
            raise SchemaMismatch(where, f"must be an object, found {_kind(value)}")
        return {k: check(v, schema.schema, _join(where, k)) for k, v in value.items()}
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise SchemaMismatch(where, f"must be an object, found {_kind(value)}")
        result = dict(value)
        for field, sub in schema.items():
            name, optional = (field[:-1], True) if field.endswith("?") else (field, False)
            if name not in value:
                if optional:
                    continue
                raise SchemaMismatch(_join(where, name), "is missing")
            result[name] = check(value[name], sub, _join(where, name))
        return result
    raise TypeError(f"unknown schema {schema!r}")  # a bug in trtq, not in the file


# --------------------------------------------------------------------------------------------- reading

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def nesting_depth(data: bytes) -> int:
    """How deeply ``data``'s arrays and objects nest (strings ignored); computed without parsing."""
    bare = np.frombuffer(_STRINGS.sub(b'""', data), dtype=np.uint8)
    if not bare.size:
        return 0
    steps = np.isin(bare, (ord("["), ord("{"))).astype(np.int32) - np.isin(bare, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def parse(data: bytes, source: str, schema=None, error: Type[TrtqError] = TrtqError,
          hint: str = "") -> Any:
    """Parse JSON bytes under the limits of :func:`read_json` (``source`` names the document in errors)."""
    tail = f"; {hint}" if hint else ""
    if len(data) > MAX_BYTES:
        raise error(f"{source} is {len(data) >> 20} MiB, more than the {MAX_BYTES >> 20} MiB trtq reads as JSON{tail}")
    depth = nesting_depth(data)
    if depth > MAX_DEPTH:
        raise error(f"{source} nests {depth} levels deep (trtq reads at most {MAX_DEPTH}){tail}")
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{source} is not JSON (not UTF-8 text){tail}") from None
    except (ValueError, RecursionError) as exc:
        raise error(f"{source} is not valid JSON ({exc}){tail}") from None
    return conform(value, schema, source, error, hint)


def conform(value: Any, schema, source: str, error: Type[TrtqError] = TrtqError, hint: str = "") -> Any:
    """``value`` (a parsed document) checked against ``schema`` (None: anything); a mismatch is one ``error``
    naming ``source`` and the field."""
    if schema is None:
        return value
    try:
        return check(value, schema)
    except SchemaMismatch as exc:
        where = f"'{exc.where}' " if exc.where else "the document "
        raise error(f"{source}: {where}{exc.message}{'; ' + hint if hint else ''}") from None


def read_json(path: PathLike, what: str = "JSON file", schema=None, error: Type[TrtqError] = TrtqError,
              hint: str = "") -> Any:
    """Read and check one JSON file (see the module doc); every problem is one ``error`` naming the file."""
    from .fileio import file_kind, os_reason

    path = Path(path)
    source = f"{what} {path}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{source} does not exist") from None
    except OSError as exc:
        raise error(f"{source} cannot be read ({os_reason(exc)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{source} is {file_kind(st.st_mode)}, not a regular file{'; ' + hint if hint else ''}")
    if st.st_size > MAX_BYTES:
        raise error(f"{source} is {st.st_size >> 20} MiB, more than the {MAX_BYTES >> 20} MiB trtq reads as JSON")
    with open(path, "rb") as handle:
        data = handle.read(MAX_BYTES + 1)
    return parse(data, source, schema, error, hint)


def try_read_json(path: PathLike, predicate: Optional[Callable[[Any], bool]] = None) -> Optional[Any]:
    """The document at ``path`` if it is readable JSON within the limits (and ``predicate`` holds), else None."""
    try:
        value = read_json(path)
    except (TrtqError, OSError):
        return None
    if predicate is not None and not predicate(value):
        return None
    return value
