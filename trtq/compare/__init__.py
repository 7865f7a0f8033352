"""Comparing a candidate's outputs with its reference's: pure functions and result types, no runtime.

- :mod:`.metrics`     cosine, SNR, top-k agreement, channel groups (numpy in, numbers out)
- :mod:`.decisions`   what a model decides (class axes, masks, feature axes) and the decision score
- :mod:`.accumulate`  running sums per output over a stream of batches (:func:`compare_outputs`)
- :mod:`.struct`      result types: per-output metrics, accuracy, sensitivity, the eval report
- :mod:`.verdict`     the verdict and the gates
- :mod:`.usermetric`  the user's own ``--metric``
"""
