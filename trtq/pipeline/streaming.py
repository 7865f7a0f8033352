"""The streamed evaluate flow: reference and candidate each run a held-back sequence with their own state."""

from __future__ import annotations

from typing import Optional, Sequence

from ..runtime.streaming import FeedbackPair, check_feedback, decision_outputs, open_sequences, stream, streamed_judging


def evaluate_stream(reference, candidate, data, pairs: Sequence[FeedbackPair], *, threads: Optional[int] = None,
                    class_outputs: Optional[Sequence[str]] = None, progress=None, plugins: Sequence = (),
                    dla_core: Optional[int] = None):
    """``trtq eval --feedback``: every sequence streamed through each model with its own state fed back; the
    outputs that are not fed back compared over whole sequences (each step a sample), as an
    :class:`~trtq.compare.verdict.EvalReport`. ``candidate`` may be a TensorRT engine built from ``reference``: it is
    streamed on the GPU with its own state, each input on the reference's batch axes (``plugins``, ``dla_core``:
    what loading it needs)."""
    import time

    from ..compare.accumulate import compare_outputs
    from ..compare.verdict import EvalReport
    from ..data.spec import evaluation_spec
    from ..graph.model import model_and_name
    from ..graph.signature import input_specs, read_signature
    from ..progress import no_progress
    from ..runtime.base import OnnxRuntime, open_runtime

    progress = progress or no_progress
    started = time.perf_counter()
    ref_model, ref_name = model_and_name(reference)
    check_feedback(ref_model, pairs)
    spec = evaluation_spec(data)
    sequences = open_sequences(spec, input_specs(ref_model), pairs)
    ref = OnnxRuntime(ref_model, threads=threads, name=ref_name)
    cand = open_runtime(candidate, reference=ref_model, threads=threads, plugins=plugins, dla_core=dla_core,
                        batch_axes=read_signature(ref_model, spec.batch_axes).batch_axes())
    names = decision_outputs(ref, pairs)
    total = sum(len(s.steps) for s in sequences)
    done = 0
    progress(done, total)

    def pairs_of_outputs():
        nonlocal done
        for sequence in sequences:
            ref_out = stream(ref, sequence, pairs, names)[0]
            cand_out = stream(cand, sequence, pairs, names)[0]
            done += len(sequence.steps)
            progress(done, total)
            yield ref_out, cand_out

    with ref, cand:
        metrics = compare_outputs(pairs_of_outputs(), names, class_outputs=class_outputs or (),
                                  **streamed_judging(ref_model))
    return EvalReport(reference=ref.name, candidate=cand.name, samples=total, batches=len(sequences), outputs=metrics,
                      data=(f"{len(sequences)} sequences ({total} steps) from {spec.path}, each model streamed with its "
                            f"own state fed back ({', '.join(p.text() for p in pairs)})"),
                      reference_precision=ref.precision, candidate_precision=cand.precision,
                      seconds=time.perf_counter() - started)
