"""The streamed evaluate flow: reference and candidate each run a held-back sequence with their own state."""

from __future__ import annotations

from typing import Optional, Sequence

from ..runtime.streaming import (
    FeedbackPair,
    check_feedback,
    decision_outputs,
    open_sequences,
    stream,
    streamed_judging,
)


def evaluate_stream(reference, candidate, data, pairs: Sequence[FeedbackPair], *, threads: Optional[int] = None,
                    class_outputs: Optional[Sequence[str]] = None, progress=None, plugins: Sequence = (),
                    dla_core: Optional[int] = None):
    """``trtq eval --feedback``: every sequence streamed through each model with its own state fed back; the
    outputs that are not fed back compared over whole sequences (each step a sample), as an
    :class:`~trtq.compare.verdict.EvalReport`. ``candidate`` may be a TensorRT engine built from ``reference``: it is
    streamed on the GPU with its own state, each input on the reference's batch axes (``plugins``, ``dla_core``:
    what loading it needs)."""
    import time

    from ..bench import infer_precision, is_engine_path
    from ..compare.accumulate import compare_outputs
    from ..compare.verdict import EvalReport
    from ..data.spec import evaluation_spec
    from ..graph.model import model_and_name
    from ..graph.signature import input_specs
    from ..ort import create_session
    from ..progress import no_progress

    progress = progress or no_progress
    started = time.perf_counter()
    ref_model, ref_name = model_and_name(reference)
    check_feedback(ref_model, pairs)
    spec = evaluation_spec(data)
    sequences = open_sequences(spec, input_specs(ref_model), pairs)
    ref_session = create_session(ref_model, threads=threads)
    if not hasattr(candidate, "graph") and is_engine_path(candidate):  # the engine itself, streamed on the GPU
        from pathlib import Path

        from ..backend.bench import engine_precision
        from ..backend.runner import EngineSession

        cand_name, cand_precision = Path(candidate).name, engine_precision(candidate)
        cand_session = EngineSession(candidate, model=ref_model, plugins=plugins, dla_core=dla_core)
    else:
        cand_model, cand_name = model_and_name(candidate)
        cand_precision = infer_precision(cand_model)
        cand_session = create_session(cand_model, threads=threads)
    names = decision_outputs(ref_session, pairs)
    total = sum(len(s.steps) for s in sequences)
    done = 0
    progress(done, total)

    def pairs_of_outputs():
        nonlocal done
        for sequence in sequences:
            ref = stream(ref_session, sequence, pairs, names)[0]
            cand = stream(cand_session, sequence, pairs, names)[0]
            done += len(sequence.steps)
            progress(done, total)
            yield ref, cand

    metrics = compare_outputs(pairs_of_outputs(), names, class_outputs=class_outputs or (),
                              **streamed_judging(ref_model))
    return EvalReport(reference=ref_name, candidate=cand_name, samples=total, batches=len(sequences), outputs=metrics,
                      data=(f"{len(sequences)} sequences ({total} steps) from {spec.path}, each model streamed with its "
                            f"own state fed back ({', '.join(p.text() for p in pairs)})"),
                      reference_precision=infer_precision(ref_model), candidate_precision=cand_precision,
                      seconds=time.perf_counter() - started)
