"""Running a model: held-back replays and the streaming wrapper that feeds state back around a session.

- :mod:`.replay`     a fixed set of batches with the reference outputs, scored against candidates
- :mod:`.streaming`  state outputs fed back as inputs, step by step, around any session
"""
