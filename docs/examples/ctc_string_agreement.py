"""A trtq --metric for a CTC text reader: does the INT8 model read the same string as FP32?

    trtq calibrate reader.onnx --calib lines/ --metric docs/examples/ctc_string_agreement.py:string_agreement

trtq calls ``string_agreement(reference_outputs, candidate_outputs, inputs)`` once per sample
(every array has a batch axis of length 1) and averages the results: 1.0 means every line
reads the same. Edit ``OUTPUT`` and ``BLANK`` for your model.
"""

import numpy as np

OUTPUT = None   # the output holding [N, T, C] class scores per time step; None: the first output
BLANK = None    # the CTC blank class; None: the last class


def greedy_ctc(scores: np.ndarray, blank: int) -> list:
    """Best path: the top class per time step, repeats merged, blanks dropped."""
    best = np.argmax(scores, axis=-1)
    keep = np.ones(best.shape, dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(c) for c in best[keep] if c != blank]


def string_agreement(reference_outputs, candidate_outputs, inputs) -> float:
    name = OUTPUT or next(iter(reference_outputs))
    ref, cand = reference_outputs[name][0], candidate_outputs[name][0]
    blank = ref.shape[-1] - 1 if BLANK is None else BLANK
    return float(greedy_ctc(ref, blank) == greedy_ctc(cand, blank))
