#!/usr/bin/env python3
"""How often ``--max-drop`` breaks its budget on new data, by how many samples its search and its check read.

    python scripts/bench_budget.py [--models detector,reader,segmenter] [--budget 1] [--runs 400] [--work DIR]

Per family (scripts/_bench_models.py, the counts of bench_accuracy.py) the float model is calibrated
once with the default (auto), its layers ranked by trtq's sensitivity run on the first 64 held-back
samples (as a budget ranks them), and every prefix of that ranking (the first k groups in float) is
scored on every calibration and held-out sample: the share of decisions each sample loses
(trtq.compare.accumulate.sample_losses). Those samples stand for the population. Each run then draws
disjoint random samples for the search (S) and the check (C) and replays the budget's rules on them:

  - the search: trtq's own doubling and bisection (trtq.precision.budget.shortest_prefix), a prefix
    within budget when its points lost plus BUDGET_NOISE_SIGMAS standard errors are (no pruning pass:
    its per-layer subsets are not prefixes);
  - the check (C > 0): the search's prefix, then prefixes twice as long up to the whole ranking, the
    first within BUDGET_CHECK_SIGMAS standard errors and at least one more sample's typical loss.

A run fails when the prefix it keeps loses more than the budget over all the samples. The table gives
the failure rate and the mean layers float per (S, C). Deterministic (fixed seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_models as models  # noqa: E402

SETTINGS = [(64, 0), (64, 64), (64, 128), (64, 192), (128, 0), (256, 0)]


def prefix_losses(setup: models.Setup) -> Dict[int, np.ndarray]:
    """``{k: [samples] share of decisions lost}`` with the first k groups of the sensitivity ranking in float, over
    every calibration and held-out sample."""
    import trtq
    from trtq.compare.accumulate import sample_losses
    from trtq.compare.usermetric import UserMetric
    from trtq.data import open_source
    from trtq.graph.model import load_onnx
    from trtq.graph.qdq import quantize_model
    from trtq.graph.signature import input_specs
    from trtq.pipeline.calibration import reference_replay
    from trtq.pipeline.holdout import split_holdout
    from trtq.precision.budget import layers_of
    from trtq.precision.search import layer_sensitivity

    metric = UserMetric.load(setup.metric) if setup.metric else None
    classes = list(setup.class_outputs) or None
    result = trtq.calibrate(setup.model, setup.calib, metric=metric, class_outputs=classes)
    model = result.model if result.model is not None else load_onnx(setup.model)
    specs = input_specs(model)
    held, _ = split_holdout(iter(open_source(setup.calib, specs)), 64)
    ranking = layer_sensitivity(model, result.amax, replay=reference_replay(model, held, class_outputs=classes,
                                                                             metric=metric))
    groups = [entry.nodes() for entry in ranking if entry.own_snr_db is not None]
    pool = list(open_source(dataclasses.replace(setup.calib, shuffle=False), specs)) + \
        list(open_source(setup.holdout, specs))
    everything = reference_replay(model, pool, class_outputs=classes, metric=metric)
    losses = {}
    for k in range(len(groups) + 1):
        quantized, _ = quantize_model(model, result.amax, target="trt", exclude=layers_of(groups[:k]))
        losses[k] = sample_losses(everything.score(quantized))
    return losses


class _Prefixes:
    """The budget's measurement on one draw of samples: ``(within, share kept, None)`` of a prefix."""

    def __init__(self, losses: Dict[int, np.ndarray], index: np.ndarray, budget: float, sigmas: float,
                 typical: float = 0.0):
        from trtq.precision.budget import BudgetOutcome

        self.losses, self.index, self.budget, self.sigmas, self.typical = losses, index, budget, sigmas, typical
        self.outcome = BudgetOutcome(budget, "", 0.0, 0.0, False, [], len(index))

    def within(self, k: int) -> bool:
        lost = self.losses[k][self.index]
        spread = self.sigmas * lost.std() / np.sqrt(len(lost))
        floor = self.typical / len(lost) if k < max(self.losses) else 0.0  # the whole ranking float: exact
        return 100.0 * (lost.mean() + max(spread, floor)) <= self.budget + 1e-9

    def __call__(self, groups: Sequence[Sequence[str]], phase: str):
        self.outcome.steps.append({"phase": phase})
        ok = self.within(len(groups))
        return ok, 1.0 - self.losses[len(groups)][self.index].mean(), [] if ok else None


def one_run(losses: Dict[int, np.ndarray], rng: np.random.Generator, search: int, check: int, budget: float) -> int:
    """The prefix one budget run keeps on a random draw of ``search`` + ``check`` samples."""
    from trtq import defaults
    from trtq.precision.budget import shortest_prefix

    total = max(losses)
    order = rng.permutation(len(losses[0]))
    measure = _Prefixes(losses, order[:search], budget, defaults.BUDGET_NOISE_SIGMAS)
    k = 0
    if not measure.within(0):
        groups = [[str(i)] for i in range(total)]
        k, found, _ = shortest_prefix(groups, measure, None)
        if found is None:  # not met: nothing is left float
            return 0
    if not check:
        return k
    start = losses[0][order[:search]]
    typical = float(start[start > 0].mean()) if (start > 0).any() else 0.0
    checked = _Prefixes(losses, order[search:search + check], budget, defaults.BUDGET_CHECK_SIGMAS, typical)
    size = k
    while size < total and not checked.within(size):
        size = min(total, 2 * size if size else 1)
    return size


def simulate(name: str, losses: Dict[int, np.ndarray], budget: float, runs: int) -> List[str]:
    total = max(losses)
    population = {k: 100.0 * float(v.mean()) for k, v in losses.items()}
    lines = [f"== {name}: {len(losses[0])} samples, {total} ranked layer groups; points lost with the first k float: "
             + " ".join(f"{k}:{population[k]:.2f}" for k in sorted(population))]
    lines.append(f"{'search':>7} {'check':>6} {'runs over budget':>17} {'mean layers float':>18}")
    for search, check in SETTINGS:
        if search + check > len(losses[0]) // 2:
            continue
        rng = np.random.default_rng(0)
        kept = [one_run(losses, rng, search, check, budget) for _ in range(runs)]
        over = np.mean([population[k] > budget + 1e-6 for k in kept])
        lines.append(f"{search:7d} {check:6d} {over:16.1%} {np.mean(kept):18.2f}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    import bench_accuracy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="detector,reader,segmenter", help="comma-separated: "
                        + ", ".join(models.LOADERS))
    parser.add_argument("--budget", type=float, default=1.0, help="the budget, points (--max-drop)")
    parser.add_argument("--runs", type=int, default=400, help="random draws per setting")
    parser.add_argument("--work", default=None, help="folder for the trained families and their data")
    args = parser.parse_args(argv)
    work = Path(args.work) if args.work else Path.cwd() / "bench-work"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for name in [n.strip() for n in args.models.split(",") if n.strip()]:
        samples, holdout = bench_accuracy.COUNTS[name]
        try:
            setup = models.LOADERS[name](work, samples, holdout)
        except models.Unavailable as exc:
            print(f"== {name}: not run: {exc}")
            continue
        setup = setup[0] if isinstance(setup, list) else setup
        losses = prefix_losses(setup)
        if losses[0] is None:
            print(f"== {name}: nothing decides (no class axis, mask or metric): a budget does not run")
            continue
        print("\n".join(simulate(name, losses, args.budget, args.runs)), flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
