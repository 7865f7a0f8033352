"""Calibration and evaluation data: image folders, ``.npy``/``.npz`` files, loader scripts.

    from trtq.data import open_source
    source = open_source(DataSpec("calib_data/"), input_specs(model))
    print(source.description)      # 1000 images from calib_data/ (resized to 320x320, RGB, NCHW float32)
    for feed in source:            # {input_name: np.ndarray}, batch_size samples each
        session.run(None, feed)

Sources stream: a batch is read when it is asked for, and only the files of the
selected samples are ever opened. What a path holds decides the kind:

- a ``.py`` file (or ``file.py:function``): a loader script, see :mod:`trtq.data.script`;
- an image file or a folder of images: see :mod:`trtq.data.images`;
- a ``.npy``/``.npz`` file or a folder of them: see :mod:`trtq.data.arrays`
  (the rank rule: an array of the input's rank is a stack of samples along the input's
  batch axis, one of rank - 1 is a single sample; see :mod:`trtq.graph.batch`).

Selection (:class:`~trtq.data.spec.DataSpec`): ``samples`` samples (``None``: all;
fewer available: all of them, with a warning), picked with ``seed`` from a shuffled
file list when ``shuffle`` (files holding several samples give a seeded random
subset), else the first in sorted file order. Batches hold ``batch_size`` samples,
the last one possibly fewer; a model whose inputs fix the batch dim gets exactly
that many per batch (the batch size is changed, with a log line, and a remainder is
dropped, with a warning). Every sample is checked against the model inputs: names,
rank, static dims, dtype (floats are cast to the input's float type; integer inputs
take integer data only), NaN/Inf; a bad one raises :class:`~trtq.errors.DataError`
naming its file.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from ..errors import DataError
from ..graph.model import TensorSpec
from .labels import load_labels
from .source import ARRAY_EXTENSIONS, IMAGE_EXTENSIONS, SCRIPT_EXTENSIONS, DataSource, check_regular, list_files
from .spec import DataSpec, Preprocess

__all__ = ["open_source", "data_files", "load_labels", "DataSource", "DataSpec", "Preprocess", "IMAGE_EXTENSIONS",
           "ARRAY_EXTENSIONS", "SCRIPT_EXTENSIONS", "SUPPORTED_EXTENSIONS"]

SUPPORTED_EXTENSIONS = IMAGE_EXTENSIONS + ARRAY_EXTENSIONS


def _supported_text() -> str:
    return (f"images ({', '.join(IMAGE_EXTENSIONS)}), arrays ({', '.join(ARRAY_EXTENSIONS)}) "
            f"or a .py loader script")


def open_source(spec: DataSpec, inputs: Sequence[TensorSpec]) -> DataSource:
    """Open the data ``spec`` describes for a model with ``inputs``; nothing is read but headers.

    Raises :class:`~trtq.errors.DataError` for a missing path, a folder without
    supported files, a script that fails to import, or data that cannot fit the
    model (shapes and dtypes from array headers are checked here, before any batch).
    """
    from .script import ScriptSource, split_script_path
    from .validate import check_inputs

    if not isinstance(spec, DataSpec):
        raise TypeError(f"open_source() takes a DataSpec, got {type(spec).__name__}")
    from ..graph.batch import with_batch_axes

    inputs = with_batch_axes(list(inputs), getattr(spec, "batch_axes", None))
    check_inputs(inputs)
    path_text = str(spec.path)
    if not path_text:
        raise DataError("no data path given")
    script = split_script_path(path_text)
    if script is not None and not Path(path_text).expanduser().is_dir():
        return ScriptSource(spec, inputs, *script)
    path = Path(path_text).expanduser()
    if not path.exists():
        if path.is_symlink():
            check_regular(path, path_text)  # names the dangling link
        raise DataError(f"data path {path_text} does not exist; give a folder of {_supported_text()}")
    if not path.is_dir():
        check_regular(path, path_text)
    if path.is_file():
        ext = path.suffix.lower()
        if ext in IMAGE_EXTENSIONS:
            from .images import ImageSource

            return ImageSource(spec, inputs, path, [""])
        if ext in ARRAY_EXTENSIONS:
            from .arrays import ArraySource

            return ArraySource(spec, inputs, path, [""])
        raise DataError(f"{path_text}: unsupported data file type {ext or '(no extension)'!r}; "
                        f"give a folder of {_supported_text()}")
    images, arrays, other = list_files(path)
    if images and arrays:
        raise DataError(f"{path_text} mixes images ({len(images)}) and .npy/.npz files ({len(arrays)}); "
                        f"keep one kind per folder")
    if images:
        from .images import ImageSource

        return ImageSource(spec, inputs, path, images)
    if arrays:
        from .arrays import ArraySource

        return ArraySource(spec, inputs, path, arrays)
    found = ""
    if other:
        exts = sorted({Path(name).suffix.lower() or "(none)" for name in other})
        found = f"; found {len(other)} other file(s) ({', '.join(exts[:8])})"
    raise DataError(f"{path_text} holds no supported data files{found}. Supported: {_supported_text()}; "
                    f"letter case does not matter, sub-folders are searched, hidden files are skipped")


def data_files(path: str) -> List[Path]:
    """The files a data path makes a command read (for the output guard): a loader script,
    one data file, or the image/array files of a folder. Unreadable or missing: ``[]``
    (opening the source reports that)."""
    from .script import split_script_path

    text = str(path)
    if not text:
        return []
    candidate = Path(text).expanduser()
    script = split_script_path(text)
    if script is not None and not candidate.is_dir():
        return [Path(script[0]).expanduser()]
    if candidate.is_file():
        return [candidate]
    if not candidate.is_dir():
        return []
    images, arrays, _ = list_files(candidate, quiet=True)  # opening the source warns about what it skips
    return [candidate / rel for rel in images + arrays]
