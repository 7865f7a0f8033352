"""Class labels for evaluation, aligned to sample ids.

Two kinds of label file:

- keyed: a ``.csv`` / ``.tsv`` / ``.txt`` file of ``id,label`` rows (comma, tab or
  whitespace separated; an optional header row and ``#`` comments are skipped).
  An id matches a sample by its path relative to the data folder
  (``cats/001.jpg``), that path without extension (``cats/001``), the file name
  (``001.jpg``) or the file name without extension (``001``). Samples from a file
  holding several keep their ``[i]`` suffix: ``batch0.npy[3]`` or ``batch0[3]``.
- positional: a ``.npy`` of integers, or a text file with one label per line, listing
  one label per sample in sorted file order (``order``: every sample of the source,
  see :meth:`DataSource.all_ids`; by default the ids asked for, or for ids of
  one stream such as a loader script's ``prep.py[17]``, the index in brackets).

Labels are integer class indices.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..errors import DataError

_SUFFIX = re.compile(r"^(.*?)(\[\d+\])$")


def _keys(sample_id: str) -> List[str]:
    """Names a label file may use for ``sample_id``, most specific first."""
    match = _SUFFIX.match(sample_id)
    base, index = (match.group(1), match.group(2)) if match else (sample_id, "")
    stem = posixpath.splitext(base)[0]
    name = posixpath.basename(base)
    keys = [base, stem, name, posixpath.splitext(name)[0]]
    seen: List[str] = []
    for key in keys:
        if key + index not in seen:
            seen.append(key + index)
    return seen


def _normal(key: str) -> str:
    key = key.strip().strip('"').replace("\\", "/")
    return key[2:] if key.startswith("./") else key


def _as_label(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"{where}: label {text!r} is not an integer class index") from None
        if not value.is_integer():
            raise DataError(f"{where}: label {text!r} is not an integer class index") from None
        return int(value)


def _split(line: str) -> List[str]:
    if "," in line:
        return [part.strip() for part in line.split(",")]
    if "\t" in line:
        return [part.strip() for part in line.split("\t")]
    return line.split()


def read_label_file(path: Union[str, Path]):
    """``("keyed", {id: label})`` or ``("positional", int64 array)`` from a label file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"label file {path} does not exist")
    if path.is_dir():
        raise DataError(f"label path {path} is a folder; give a .csv/.tsv/.txt or .npy file")
    from ..fileio import check_regular  # fileio's check, not data.source's: source reads labels, not the reverse

    check_regular(path, f"label file {path}", DataError, "give a regular .csv/.tsv/.txt or .npy label file")
    if path.suffix.lower() == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path}: not a readable .npy array ({type(exc).__name__}: {exc})") from None
        labels = np.asarray(labels).reshape(-1) if labels.ndim == 2 and 1 in labels.shape else labels
        if labels.ndim != 1:
            raise DataError(f"{path}: labels must be a 1-D array of class indices, got shape {labels.shape}")
        if labels.dtype.kind == "f":
            if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
                raise DataError(f"{path}: labels must be integer class indices, got non-integer {labels.dtype} values")
        elif labels.dtype.kind not in "iub":
            raise DataError(f"{path}: labels must be integer class indices, got {labels.dtype}")
        return "positional", labels.astype(np.int64)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read labels ({type(exc).__name__}: {exc})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            rows.append((number, _split(stripped)))
    if not rows:
        raise DataError(f"{path}: holds no labels")
    widths = {len(fields) for _, fields in rows}
    if widths == {1}:
        first = rows[0][1][0]
        if not re.fullmatch(r"[-+]?\d+(\.0*)?", first):
            rows = rows[1:]  # a header such as "label"
        return "positional", np.array([_as_label(f[0], f"{path} line {n}") for n, f in rows], dtype=np.int64)
    if min(widths) < 2:
        number = next(n for n, fields in rows if len(fields) < 2)
        raise DataError(f"{path} line {number}: expected 'id,label', got one field")
    number, fields = rows[0]
    if not re.fullmatch(r"[-+]?\d+(\.0*)?", fields[1]):
        rows = rows[1:]  # a header such as "file,label"
    mapping: Dict[str, int] = {}
    for number, fields in rows:
        key, label = _normal(fields[0]), _as_label(fields[1], f"{path} line {number}")
        if key in mapping and mapping[key] != label:
            raise DataError(f"{path} line {number}: id {key!r} is listed twice with different labels")
        mapping[key] = label
    return "keyed", mapping


def _stream_positions(ids: Sequence[str]) -> Optional[List[int]]:
    """``["prep.py[3]", "prep.py[4]"]`` -> ``[3, 4]`` when every id indexes one stream, else None."""
    positions, stems = [], set()
    for sample_id in ids:
        match = _SUFFIX.match(sample_id)
        if not match:
            return None
        stems.add(match.group(1))
        positions.append(int(match.group(2)[1:-1]))
    return positions if len(stems) == 1 else None


def load_labels(path: Union[str, Path], ids: Sequence[str], order: Optional[Sequence[str]] = None) -> np.ndarray:
    """Integer labels for ``ids`` (an ``int64`` array aligned to them).

    ``order``: for positional label files, the ids the file lists labels for, in
    that order (every sample of the data source in sorted file order); ``None``
    means ``ids`` themselves. Samples without a label raise a DataError listing a few.
    """
    kind, found = read_label_file(path)
    ids = list(ids)
    if kind == "positional":
        indexed = _stream_positions(ids) if order is None else None
        if indexed is not None:  # ids of one stream ("prep.py[17]", a loader script): the index is the position
            beyond = [i for i, position in zip(ids, indexed) if position >= len(found)]
            if beyond:
                raise DataError(f"{path} lists {len(found)} labels (one per line, in sample order), but the data "
                                f"has more samples: {', '.join(beyond[:5])}{' ...' if len(beyond) > 5 else ''}")
            return found[np.asarray(indexed, dtype=np.int64)]
        order = ids if order is None else list(order)
        if len(found) != len(order):
            raise DataError(f"{path} lists {len(found)} labels (one per line, in sorted file order), but the data "
                            f"holds {len(order)} samples; give one label per sample, or an 'id,label' file")
        position = {sample_id: index for index, sample_id in enumerate(order)}
        missing = [i for i in ids if i not in position]
        if missing:
            raise DataError(f"{path}: {len(missing)} sample id(s) are not in the label order: "
                            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        return np.array([found[position[i]] for i in ids], dtype=np.int64)
    labels = np.empty(len(ids), dtype=np.int64)
    missing = []
    for index, sample_id in enumerate(ids):
        for key in _keys(sample_id):
            if key in found:
                labels[index] = found[key]
                break
        else:
            missing.append(sample_id)
    if missing:
        raise DataError(f"{path} has no label for {len(missing)} of {len(ids)} samples: "
                        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                        f"(ids are file paths relative to the data folder, with or without extension)")
    return labels
