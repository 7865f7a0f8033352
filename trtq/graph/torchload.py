"""Loading a PyTorch model for export: a factory (``package.module:function`` or ``file.py:function``),
a TorchScript archive or a saved module; torch is imported only when called."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, Union

from ..errors import BackendUnavailable, ModelError, TrtqError
from ..usercode import user_code

#: File suffixes loaded as saved models rather than imported as Python.
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".ts", ".bin", ".jit")

_TORCH_HINT = "pip install 'trtq[torch]'"


def import_torch():
    """``import torch``, or a :class:`BackendUnavailable` that says how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailable(f"exporting from PyTorch needs torch, which is not installed "
                                 f"({exc}); install it with: {_TORCH_HINT}") from None
    return torch


def _one_line(exc: BaseException, limit: int = 400) -> str:
    """The first meaningful line of an exception message, shortened."""
    text = str(exc).replace("\x1b[96m", "").replace("\x1b[0m", "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return line


def _import_factory_module(module_part: str, source: str):
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        path = Path(module_part)
        if not path.is_file():
            raise ModelError(f"{source}: the file {path} does not exist")
        name = f"_trtq_model_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ModelError(f"{source}: {path} cannot be imported as Python (give a .py file)")
        module = importlib.util.module_from_spec(spec)
        folder = str(path.resolve().parent)
        sys.path.insert(0, folder)  # so the file can import its siblings
        sys.modules[name] = module
        try:
            with user_code(f"{source}: importing {path}", error=ModelError):
                spec.loader.exec_module(module)
        except TrtqError:
            sys.modules.pop(name, None)
            raise
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ModelError(f"{source}: importing {path} failed: {type(exc).__name__}: {_one_line(exc)}") from None
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
        return module
    try:
        with user_code(f"{source}: importing {module_part}", error=ModelError):
            return importlib.import_module(module_part)
    except TrtqError:
        raise
    except ModuleNotFoundError as exc:
        raise ModelError(f"{source}: module {exc.name or module_part!r} not found; check the spelling and that its "
                         f"package is installed or on PYTHONPATH (or give a file: path/to/model.py:factory)") from None
    except Exception as exc:
        raise ModelError(f"{source}: importing {module_part} failed: {type(exc).__name__}: {_one_line(exc)}") from None


def _load_factory(source: str):
    torch = import_torch()
    module_part, _, attr = source.rpartition(":")
    if not module_part or not attr:
        raise ModelError(f"{source!r}: expected package.module:factory or path/to/file.py:factory")
    module = _import_factory_module(module_part, source)
    target: Any = module
    for piece in attr.split("."):
        if not hasattr(target, piece):
            raise ModelError(f"{source}: {module_part} has no attribute {attr!r}")
        target = getattr(target, piece)
    if isinstance(target, torch.nn.Module):
        return target
    if not callable(target):
        raise ModelError(f"{source}: {attr} is a {type(target).__name__}, "
                         f"not a callable that returns a torch.nn.Module")
    try:
        with user_code(f"{source}: {attr}()", error=ModelError):
            model = target()
    except TrtqError:
        raise
    except Exception as exc:
        raise ModelError(f"{source}: calling {attr}() failed: {type(exc).__name__}: {_one_line(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{source}: {attr}() returned a {type(model).__module__}.{type(model).__name__}, "
                         f"not a torch.nn.Module")
    return model


def _is_torchscript_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _load_model_file(path: Path):
    torch = import_torch()
    if not path.exists():
        raise ModelError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelError(f"{path} is a folder; give a model file (.pt) or package.module:factory")
    if _is_torchscript_archive(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13: "torch.jit.load is deprecated"
                return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelError(f"{path} looks like TorchScript but does not load: {_one_line(exc)}") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        # A whole pickled module: unpickling runs code the file names. Same trust as
        # running a .py file from the same author; the CLI help says so.
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except (ModuleNotFoundError, AttributeError) as exc:
            raise ModelError(f"{path} is a pickled module whose class cannot be found ({_one_line(exc)}); run trtq "
                             f"where the model's code is importable, or give package.module:factory") from None
        except Exception as exc:
            raise ModelError(f"{path} is not a PyTorch model file trtq can load "
                             f"({type(exc).__name__}: {_one_line(exc)})") from None
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, dict):
        raise ModelError(f"{path} holds only weights (a state_dict), not a model; give the model code as "
                         f"package.module:factory (a function that builds the module and loads these weights)")
    raise ModelError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module")


def load_torch_model(source: Union[str, "os.PathLike[str]"]):
    """A ``torch.nn.Module`` from ``package.module:factory``, ``file.py:factory``, a TorchScript
    file (``torch.jit.save``) or a whole module saved with ``torch.save``.

    A ``torch.save`` pickle is loaded with ``weights_only=False``, which runs code named in
    the file: load only files you trust, as you would a Python script.
    """
    text = os.fspath(source)
    path = Path(text)
    if path.suffix.lower() in MODEL_FILE_SUFFIXES or (path.exists() and path.is_file() and path.suffix != ".py"):
        return _load_model_file(path)
    if path.suffix == ".py":
        raise ModelError(f"{text}: name the factory in the file too, e.g. {text}:build_model")
    if ":" not in text:
        raise ModelError(f"{text!r} is neither a model file that exists nor package.module:factory")
    return _load_factory(text)
