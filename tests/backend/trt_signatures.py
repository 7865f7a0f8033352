"""Stand-ins for TensorRT's GPU-only objects that check every call against the real bindings.

On a CPU machine ``trt.Builder(...)`` and ``trt.Runtime(...)`` raise (the stub libnvinfer
returns NULL), so trtq's build and runner code cannot reach the objects they return. Here
:class:`World` replaces ``trt.Builder``, ``trt.OnnxParser`` and ``trt.Runtime`` by
:class:`Fake` objects that, for every member trtq touches:

- look the member up on the *real* pybind11 class of that TensorRT version (a name the
  version lacks is a violation: ``device_memory_size_v2`` on 8.6/10.0);
- parse the real pybind11 signature(s) from its ``__doc__`` (every overload) and check the
  arguments trtq passes: count, keyword names, and types (``int`` vs enum, ``str`` vs
  ``bytes``, ``buffer``, ``Dims`` from tuples, TensorRT classes by their real MRO);
- for attribute assignment, check the real property has a setter and its argument type
  (a read-only property such as ``Builder.num_DLA_cores`` set by trtq is a violation);
- return a scripted value (``World.script``) or a Fake of the documented return type.

Real parts stay real: enums, flags, ``Dims``, ``trt.Logger``, ``init_libnvinfer_plugins``,
``nptype``, the calibrator base classes. ``build_serialized_network`` drives an attached
calibrator through its C++ vtable, as TensorRT does (see :func:`drive_calibrator`).
"""

from __future__ import annotations

import ctypes
import inspect
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

#: How pybind11 >= 2.13 / 3.x spells the casters older releases document as int, float, buffer.
_ALIASES = {"typing.SupportsInt": "int", "typing.SupportsIndex": "int", "typing.SupportsFloat": "float",
            "typing_extensions.Buffer": "buffer", "collections.abc.Buffer": "buffer", "typing.Any": "object",
            "types.CapsuleType": "capsule", "typing_extensions.CapsuleType": "capsule"}
_SIG = re.compile(r"^(?:\d+\.\s+)?(\w+)\((.*)\)\s*->\s*(.+?)\s*$")


def _split(params: str) -> List[str]:
    out, depth, cur = [], 0, ""
    for ch in params:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def signatures(obj, name: str) -> List[Tuple[List[Tuple[str, str, bool]], str]]:
    """[(params [(name, type, has_default)], return type)] of every documented overload of ``obj``."""
    doc = getattr(obj, "__doc__", None) or ""
    found = []
    for line in doc.splitlines():
        match = _SIG.match(line.strip())
        if not match or match.group(1) != name or "*args" in match.group(2):
            continue
        params = []
        for part in _split(match.group(2)):
            pname, _, rest = part.partition(":")
            ptype, _, default = rest.partition("=")
            params.append((pname.strip(), ptype.strip(), bool(default.strip())))
        found.append((params, match.group(3)))
    return found


class World:
    """One scenario: the real module, scripted answers, and the record of calls and violations."""

    def __init__(self, trt):
        self.trt = trt
        self.real = {name: getattr(trt, name) for name in dir(trt) if inspect.isclass(getattr(trt, name))}
        self.script: Dict[str, Any] = {}
        self.calls: List[Tuple[str, str, tuple]] = []
        self.sets: Dict[Tuple[int, str], Any] = {}
        self.violations: List[str] = []
        self.unknown_types: set = set()
        self.drove: List[str] = []

    # -- installing -------------------------------------------------------------------------
    def install(self):
        trt = self.trt
        self._saved = {name: getattr(trt, name) for name in ("Builder", "OnnxParser", "Runtime")}
        for name in self._saved:
            setattr(trt, name, self._factory(name))
        return self

    def uninstall(self):
        for name, value in self._saved.items():
            setattr(self.trt, name, value)

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()

    def _factory(self, cls_name: str):
        world = self

        def make(*args, **kwargs):
            world._check_call(cls_name, "__init__", world.real[cls_name].__init__, args, kwargs, method=True)
            world.calls.append((cls_name, "__init__", args))
            handler = world.script.get(f"{cls_name}.__init__")
            if handler is not None:
                handler(*args)
            return Fake(world, cls_name)

        return make

    # -- type checks ------------------------------------------------------------------------
    def _trt_name(self, text: str) -> Optional[str]:
        match = re.fullmatch(r"(?:tensorrt(?:_bindings)?\.)?tensorrt\.(\w+)", text)
        if match:
            return match.group(1)
        native = re.fullmatch(r"(?:nvinfer1|nvonnxparser)::(\w+)", text)  # some types are documented by C++ name
        if native:
            name = native.group(1)
            return name if name in self.real else name[1:] if name[1:] in self.real else None
        return None

    def accepts(self, value, typ: str) -> bool:
        typ = typ.strip()
        if typ.startswith("Optional[") or typ.startswith("typing.Optional["):
            return value is None or self.accepts(value, typ[typ.index("[") + 1:-1])
        if " | " in typ:
            return any(self.accepts(value, t) for t in typ.split(" | "))
        for prefix in ("List[", "typing.List[", "Sequence[", "typing.Sequence[", "collections.abc.Sequence["):
            if typ.startswith(prefix):
                inner = typ[len(prefix):-1]
                return isinstance(value, (list, tuple)) and all(self.accepts(v, inner) for v in value)
        if typ == "None":
            return value is None
        typ = _ALIASES.get(typ, typ)  # newer pybind11 writes typing protocols for the same casters
        if typ == "int":
            return isinstance(value, int) and not hasattr(type(value), "__members__")
        if typ == "float":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if typ == "bool":
            return isinstance(value, bool)
        if typ == "str":
            return isinstance(value, str)
        if typ == "bytes":
            return isinstance(value, bytes)
        if typ in ("tuple", "list"):
            return isinstance(value, tuple if typ == "tuple" else list)
        if typ == "buffer":
            try:
                memoryview(value)
                return True
            except TypeError:
                return False
        if typ in ("capsule", "object", "os.PathLike", "numpy.ndarray"):
            return True
        name = self._trt_name(typ)
        if name is None:
            self.unknown_types.add(typ)
            return True
        if re.fullmatch(r"Dims(\d|32|64|HW|CHW|NCHW)?", name):
            if isinstance(value, self.real.get("Dims", ())):
                return True
            return isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value)
        real = self.real.get(name)
        if real is None:
            self.unknown_types.add(typ)
            return True
        if hasattr(real, "__members__"):  # a pybind11 enum: only its own members, never a bare int
            return isinstance(value, real)
        if isinstance(value, Fake):
            return issubclass(self.real[value._cls], real)
        return isinstance(value, real)

    def _check_call(self, cls_name, member, real_member, args, kwargs, method: bool):
        sigs = signatures(real_member, member)
        if not sigs:
            self.unknown_types.add(f"{cls_name}.{member}: no parsable signature")
            return None
        problems = []
        for params, ret in sigs:
            if method:
                params = params[1:]  # self
            why = self._match(params, args, kwargs)
            if why is None:
                return ret
            problems.append(why)
        self.violations.append(f"{cls_name}.{member}{tuple(self._show(a) for a in args)}: "
                               f"{'; '.join(problems)}")
        return sigs[0][1]

    @staticmethod
    def _show(value):
        return f"<{value._cls}>" if isinstance(value, Fake) else (type(value).__name__ if not isinstance(
            value, (int, str, tuple, bool)) else value)

    def _match(self, params, args, kwargs) -> Optional[str]:
        if len(args) > len(params):
            return f"{len(args)} positional arguments, the signature takes {len(params)}"
        bound = dict(zip([p[0] for p in params], args))
        for key, value in kwargs.items():
            if key not in [p[0] for p in params]:
                return f"no parameter named {key!r}"
            bound[key] = value
        for pname, ptype, has_default in params:
            if pname not in bound:
                if not has_default:
                    return f"missing argument {pname!r}"
                continue
            if not self.accepts(bound[pname], ptype):
                return f"{pname}={self._show(bound[pname])!r} is not {ptype}"
        return None

    def default_for(self, typ: str):
        typ = typ.strip()
        if typ == "bool":
            return True
        if typ == "int":
            return 0
        if typ == "str":
            return ""
        if typ == "None":
            return None
        name = self._trt_name(typ)
        if name and name in self.real and not hasattr(self.real[name], "__members__"):
            return Fake(self, name)
        return None


class Fake:
    """A TensorRT object of class ``_cls`` whose members are checked against the real class."""

    def __init__(self, world: World, cls: str):
        object.__setattr__(self, "_world", world)
        object.__setattr__(self, "_cls", cls)

    def _real_member(self, name):
        real = self._world.real[self._cls]
        if not hasattr(real, name):
            self._world.violations.append(f"{self._cls}.{name} does not exist in TensorRT {self._world.trt.__version__}")
            raise AttributeError(f"{self._cls} has no {name} in this TensorRT")
        return inspect.getattr_static(real, name)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        member = self._real_member(name)
        world, key = self._world, f"{self._cls}.{name}"
        if isinstance(member, property):
            world.calls.append((self._cls, name, ()))
            if (id(self), name) in world.sets:
                return world.sets[(id(self), name)]
            if key in world.script:
                value = world.script[key]
                return value(self) if callable(value) and not isinstance(value, type) else value
            sigs = signatures(member.fget, "") or []
            ret = (member.fget.__doc__ or "").strip().split("->")[-1].strip() if member.fget else ""
            return world.default_for(ret)

        def call(*args, **kwargs):
            ret = world._check_call(self._cls, name, member, args, kwargs, method=True)
            world.calls.append((self._cls, name, args))
            handler = world.script.get(key)
            if handler is not None:
                return handler(self, *args, **kwargs)
            return world.default_for(ret or "None")

        return call

    def __setattr__(self, name, value):
        member = self._real_member(name)
        world = self._world
        if not isinstance(member, property) or member.fset is None:
            world.violations.append(f"{self._cls}.{name} is read-only in TensorRT {world.trt.__version__}")
            return
        doc = (member.fset.__doc__ or "").strip().splitlines()
        match = re.match(r"\((.*)\)\s*->", doc[0]) if doc else None
        if match:
            params = _split(match.group(1))
            typ = params[-1].partition(":")[2].strip() if len(params) >= 2 else ""
            if typ and not world.accepts(value, typ):
                world.violations.append(f"{self._cls}.{name} = {World._show(value)!r}: not {typ}")
        world.sets[(id(self), name)] = value
        world.calls.append((self._cls, f"{name}=", (value,)))

    def was_set(self, name):
        return self._world.sets.get((id(self), name))


# -- TensorRT's side of the calibrator: the C++ vtable -------------------------------------------

def _cpp_ptr(obj) -> int:
    return ctypes.c_void_p.from_address(id(obj) + 16).value  # pybind11 instance: simple_value_holder[0]


def vtable_function(trt, obj, slot_name: str, restype, *argtypes) -> Callable:
    """The C++ virtual ``slot_name`` of a calibrator object, callable like TensorRT calls it."""
    major = int(trt.__version__.split(".")[0])
    base = 4 if major >= 10 else 0  # IVersionedInterface: getAPILanguage, getInterfaceInfo, 2 destructor slots
    slots = dict(getBatchSize=base, getBatch=base + 1, readCalibrationCache=base + 2,
                 writeCalibrationCache=base + 3, getAlgorithm=base + 4)
    this = _cpp_ptr(obj)
    table = ctypes.c_void_p.from_address(this).value
    function = ctypes.c_void_p.from_address(table + 8 * slots[slot_name]).value
    proto = ctypes.CFUNCTYPE(restype, ctypes.c_void_p, *argtypes)(function)
    return lambda *args: proto(this, *args)


def drive_calibrator(trt, calibrator, names: List[str], cache_payload: bytes, record: List[str]) -> int:
    """Calibrate as TensorRT's builder does: batch size, algorithm, cache or getBatch loop, write.

    Returns the number of batches TensorRT got. ``record`` gets one line per vtable call.
    """
    batch_size = vtable_function(trt, calibrator, "getBatchSize", ctypes.c_int32)()
    algorithm = vtable_function(trt, calibrator, "getAlgorithm", ctypes.c_int32)()
    record.append(f"getBatchSize={batch_size}")
    record.append(f"getAlgorithm={algorithm}")
    length = ctypes.c_size_t(0)
    pointer = vtable_function(trt, calibrator, "readCalibrationCache", ctypes.c_void_p,
                              ctypes.POINTER(ctypes.c_size_t))(ctypes.byref(length))
    batches = 0
    if pointer:
        record.append(f"readCalibrationCache={length.value}")
        record.append("cache=" + ctypes.string_at(pointer, length.value).decode("ascii", "replace"))
    else:
        record.append("readCalibrationCache=NULL")
        get_batch = vtable_function(trt, calibrator, "getBatch", ctypes.c_bool, ctypes.POINTER(ctypes.c_void_p),
                                    ctypes.POINTER(ctypes.c_char_p), ctypes.c_int32)
        c_names = (ctypes.c_char_p * len(names))(*[n.encode() for n in names])
        while True:
            bindings = (ctypes.c_void_p * len(names))()
            if not get_batch(bindings, c_names, len(names)):
                break
            record.append("getBatch=" + ",".join(hex(b or 0) for b in bindings))
            batches += 1
            if batches > 10000:
                raise AssertionError("getBatch never returned false")
    buffer = ctypes.create_string_buffer(cache_payload, len(cache_payload))
    vtable_function(trt, calibrator, "writeCalibrationCache", None, ctypes.c_void_p, ctypes.c_size_t)(
        ctypes.cast(buffer, ctypes.c_void_p), len(cache_payload))
    record.append(f"writeCalibrationCache={len(cache_payload)}")
    return batches
