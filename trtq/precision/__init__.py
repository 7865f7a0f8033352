"""Mixed precision by measurement: which layers to leave float, and how many a fidelity target needs.

- :mod:`.search`   per-layer sensitivity and the exclusion search (``--auto-exclude``)
- :mod:`.targets`  ``--target-snr``/``--target-cosine``/``--target-agreement`` and the sidecar record
"""
