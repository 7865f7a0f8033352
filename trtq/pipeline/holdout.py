"""Held-back samples: how many the verdict keeps apart from calibration, and splitting them off."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import defaults

PathLike = Union[str, Path]
Feed = Dict[str, np.ndarray]


def holdout_count(total: Optional[int], wanted: int = defaults.HOLDOUT_SAMPLES) -> int:
    """Samples to hold back out of ``total`` (see :data:`trtq.defaults.HOLDOUT_SAMPLES`)."""
    if wanted <= 0:
        return 0
    if total is None or total >= 4 * wanted:
        return wanted
    return total // 4


def holdout_reserve(total: Optional[int], holdout: int = defaults.HOLDOUT_SAMPLES) -> int:
    """Samples held back beside ``holdout`` as a reserve (auto's rescoring, a budget's search):
    :data:`~trtq.defaults.HOLDOUT_RESERVE` where there are at least 4x as many samples as both, or the count is
    unknown; none without a hold-out."""
    if holdout <= 0 or (total is not None and total < 4 * (holdout + defaults.HOLDOUT_RESERVE)):
        return 0
    return defaults.HOLDOUT_RESERVE


def budget_check_count(total: Optional[int], held: int) -> int:
    """Samples a budget (``--max-drop``) holds back to check its search on, beside the ``held`` ones already
    held back: :data:`~trtq.defaults.BUDGET_CHECK_SAMPLES`, at most a third of ``total`` less ``held`` (None:
    the count is unknown), and none below :data:`~trtq.defaults.BUDGET_CHECK_MIN`."""
    count = defaults.BUDGET_CHECK_SAMPLES if total is None else min(defaults.BUDGET_CHECK_SAMPLES,
                                                                     total // 3 - held)
    return count if count >= defaults.BUDGET_CHECK_MIN else 0


def budget_check_needs(holdout: int = defaults.HOLDOUT_SAMPLES) -> int:
    """The fewest calibration samples from which on a budget always gets its check (:func:`budget_check_count`
    beside the held-back samples and the reserve, as calibrate holds them back for a budget)."""
    last_without = 0
    for total in range(1, 4 * (holdout + defaults.HOLDOUT_RESERVE + defaults.BUDGET_CHECK_SAMPLES) + 1):
        if not budget_check_count(total, holdout_count(total, holdout) + holdout_reserve(total, holdout)):
            last_without = total
    return last_without + 1


def split_holdout(batches: Iterable[Mapping[str, np.ndarray]], count: int,
                  whole_batches: bool = False, specs: Optional[Sequence] = None) -> Tuple[List[Feed], Iterator[Feed]]:
    """The first ``count`` samples of ``batches``, and an iterator over the rest.

    A batch is split where ``count`` falls inside it, along each input's batch axis
    (``specs``: the model's :class:`~trtq.graph.model.TensorSpec` list; default axis 0 of
    every input), its remainder coming last in the rest, unless ``whole_batches`` (a
    model with a fixed batch size): then whole batches are held back until ``count``
    is reached.
    """
    from ..graph.batch import feed_samples, take_samples
    from ..graph.model import TensorSpec

    iterator = iter(batches)
    held: List[Feed] = []
    have = 0
    remainder: Optional[Feed] = None
    while have < count:
        try:
            feed = {k: np.asarray(v) for k, v in next(iterator).items()}
        except StopIteration:
            break
        if specs is None:
            specs = [TensorSpec(k, tuple(v.shape), v.dtype, 0 if v.ndim else None) for k, v in feed.items()]
        n = feed_samples(feed, specs)
        take = n if whole_batches else min(n, count - have)
        held.append(take_samples(feed, specs, slice(0, take)) if take < n else feed)
        have += take
        if take < n:
            remainder = take_samples(feed, specs, slice(take, None))

    def rest() -> Iterator[Feed]:
        yield from iterator
        if remainder is not None:  # last: the first batch collection sees is a whole one (memory budget)
            yield remainder

    return held, rest()


def _take_samples(batches: Iterator[Feed], count: int) -> Tuple[List[Feed], Iterator[Feed]]:
    """The first batches of ``batches`` holding ``count`` samples, and an iterator that still yields them all."""
    taken: List[Feed] = []
    have = 0
    for feed in batches:
        taken.append(feed)
        have += len(next(iter(feed.values())))
        if have >= count:
            break
    return taken, itertools.chain(taken, batches)
