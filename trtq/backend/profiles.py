"""Optimization profiles: the min/opt/max shape of every input, the shape TensorRT calibrates
with, and shape-tensor value ranges. Pure: no TensorRT needed."""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

from .. import defaults
from ..errors import ModelError, TrtqError

Shape = Tuple[int, ...]
ProfileShapes = Dict[str, Tuple[Shape, Shape, Shape]]


def profile_shapes(inputs, batch_sizes: Optional[Sequence[int]] = None, min_shapes=None, opt_shapes=None,
                   max_shapes=None) -> ProfileShapes:
    """(min, opt, max) shape per model input (``inputs``: :class:`trtq.graph.model.TensorSpec` list).

    Explicit ``--min/--opt/--max-shapes`` win (``--opt-shapes`` alone fixes the non-batch
    axes and lets the batch axis span the batch sizes). Otherwise a dynamic batch axis spans the
    batch sizes (min = smallest, opt = max = largest; default :data:`trtq.defaults.BENCH_BATCH_SIZES`),
    and any other dynamic axis is an error asking for explicit shapes.
    """
    min_shapes, opt_shapes, max_shapes = dict(min_shapes or {}), dict(opt_shapes or {}), dict(max_shapes or {})
    known = {spec.name for spec in inputs}
    for option, table in (("--min-shapes", min_shapes), ("--opt-shapes", opt_shapes), ("--max-shapes", max_shapes)):
        unknown = [name for name in table if name not in known]
        if unknown:
            raise TrtqError(f"{option}: the model has no input {unknown[0]!r} (inputs: {', '.join(sorted(known))})")
    sizes = sorted(set(batch_sizes)) if batch_sizes else None
    result: ProfileShapes = {}
    for spec in inputs:
        given = [table.get(spec.name) for table in (min_shapes, opt_shapes, max_shapes)]
        b = spec.batch_axis if spec.batched else None
        if given[1] is not None and given[0] is None and given[2] is None and b is not None and not spec.is_static(b):
            # --opt-shapes alone: fixed non-batch axes, the batch axis spans the batch sizes
            batch = sizes or sorted(defaults.BENCH_BATCH_SIZES)
            opt = tuple(given[1])
            given = [_at(opt, b, min(batch[0], opt[b])), opt, _at(opt, b, max(batch[-1], opt[b]))]
        if any(g is not None for g in given):
            if any(g is None for g in given):
                raise TrtqError(f"input {spec.name!r}: give all of --min-shapes, --opt-shapes and --max-shapes for it")
            result[spec.name] = _checked_profile(spec, *given)
            continue
        dims = list(spec.shape)
        dynamic = [axis for axis, d in enumerate(dims) if not (isinstance(d, int) and d > 0)]
        if any(axis != b for axis in dynamic):
            axis = next(a for a in dynamic if a != b)
            raise TrtqError(f"input {spec.name!r} has a dynamic dimension {dims[axis]!r} at axis {axis}; give its "
                            f"range, e.g. --min-shapes/--opt-shapes/--max-shapes {spec.name}:"
                            f"{'x'.join(str(d) if isinstance(d, int) and d > 0 else '?' for d in dims)}")
        if not dynamic:
            static = tuple(int(d) for d in dims)
            if sizes and b is not None and sizes != [static[b]]:
                raise TrtqError(f"input {spec.name!r} has a fixed batch size of {static[b]}, so the engine cannot "
                                f"run batch sizes {','.join(map(str, sizes))}; export the model with a dynamic "
                                "batch axis or drop --batch-sizes")
            result[spec.name] = (static, static, static)
            continue
        batch = sizes or sorted(defaults.BENCH_BATCH_SIZES)
        fixed = tuple(int(d) if axis != b else 0 for axis, d in enumerate(dims))
        result[spec.name] = (_at(fixed, b, batch[0]), _at(fixed, b, batch[-1]), _at(fixed, b, batch[-1]))
    return result


def _at(shape: Sequence[int], axis: Optional[int], value: int) -> Shape:
    """``shape`` with ``value`` on ``axis`` (the input's batch axis; None: unchanged)."""
    shape = tuple(int(d) for d in shape)
    return shape if axis is None else shape[:axis] + (int(value),) + shape[axis + 1:]


def _checked_profile(spec, lo: Shape, opt: Shape, hi: Shape) -> Tuple[Shape, Shape, Shape]:
    for label, shape in (("min", lo), ("opt", opt), ("max", hi)):
        if len(shape) != spec.rank:
            raise TrtqError(f"input {spec.name!r} has rank {spec.rank} ({spec.shape_text()}), but its {label} shape "
                            f"{'x'.join(map(str, shape))} has {len(shape)} dimensions")
        for axis, (want, have) in enumerate(zip(spec.shape, shape)):
            if isinstance(want, int) and want > 0 and want != have:
                raise TrtqError(f"input {spec.name!r} axis {axis} is fixed at {want} in the model, but its {label} "
                                f"shape gives {have}")
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise TrtqError(f"input {spec.name!r}: need min <= opt <= max on every axis, got "
                        f"{'x'.join(map(str, lo))} / {'x'.join(map(str, opt))} / {'x'.join(map(str, hi))}")
    return tuple(lo), tuple(opt), tuple(hi)


def is_dynamic(profile_table: ProfileShapes) -> bool:
    return any(lo != hi for lo, _, hi in profile_table.values())


def calibration_shapes(profile_table: ProfileShapes, batch_size: int,
                       axes: Optional[Mapping[str, Optional[int]]] = None) -> Dict[str, Shape]:
    """The fixed shape TensorRT calibrates each input with: the opt shape at the calibration batch size on the
    input's batch axis (``axes``, default 0; None: a scalar or configuration input, as it is)."""
    shapes = {}
    for name, (lo, opt, hi) in profile_table.items():
        axis = (axes or {}).get(name, 0)
        shapes[name] = opt if lo == hi or not opt or axis is None else _at(opt, axis, batch_size)
    return shapes


def calibration_batch_size(profile_table: ProfileShapes, requested: int,
                           axes: Optional[Mapping[str, Optional[int]]] = None) -> int:
    """A static batch axis fixes the calibration batch size; a dynamic one takes the requested size."""
    for name, (lo, _, hi) in profile_table.items():
        axis = (axes or {}).get(name, 0)
        if lo and hi and axis is not None and lo[axis] == hi[axis]:
            return int(lo[axis])
    return int(requested)


def batch_axes_of(inputs) -> Dict[str, Optional[int]]:
    """``{input: batch axis or None}`` from TensorSpecs (what the two functions above take)."""
    return {spec.name: spec.batch_axis if spec.batched else None for spec in inputs}


def shape_value_ranges(names: Sequence[str], given: Mapping[str, Tuple[Shape, Shape, Shape]]
                       ) -> Dict[str, Tuple[Shape, Shape, Shape]]:
    """The (min, opt, max) values of each shape-tensor input, or a one-line error naming the option."""
    missing = [name for name in names if name not in given]
    if missing:
        raise ModelError(f"TensorRT treats input {missing[0]!r} as a shape tensor (its values size other tensors), so "
                         f"the engine's profile needs the range of its values: give --shape-values "
                         f"{missing[0]}:MIN/OPT/MAX (comma-separated values each, e.g. {missing[0]}:1,8/4,8/8,8)")
    return {name: tuple(tuple(int(v) for v in values) for values in given[name]) for name in names}
