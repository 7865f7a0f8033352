"""One family of errors for everything a user can cause.

The CLI prints a :class:`TrtqError` as one line (no traceback) and exits with code 2.
Messages say what was wrong and what to do about it.
"""

from __future__ import annotations


class TrtqError(Exception):
    """Base of all user-facing errors."""


class ModelError(TrtqError):
    """The model file is missing, not ONNX, or has inputs trtq cannot feed."""


class DataError(TrtqError):
    """Calibration or evaluation data is missing, corrupt, or does not fit the model."""


class CacheError(TrtqError):
    """A calibration cache is malformed or was made for another model."""


class OutputError(TrtqError):
    """An output path cannot be written."""


class BackendUnavailable(TrtqError):
    """TensorRT, CUDA or a GPU is needed but missing."""


class Interrupted(TrtqError):
    """The user pressed Ctrl-C; nothing half-written was left behind."""


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM or SIGHUP (``signum``); raised like Ctrl-C's KeyboardInterrupt so that
    every ``finally`` and every temporary-file cleanup runs. The CLI exits with 128 + ``signum``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class FidelityError(TrtqError):
    """The INT8 result is below the fidelity the caller asked for (``--min-snr`` / ``--min-cosine``).

    The CLI exits with :data:`EXIT_FIDELITY` (not 2: the input was fine, the result is not),
    and the command writes nothing.
    """

    exit_code = 3


#: Exit code of a fidelity gate failure (see :class:`FidelityError`).
EXIT_FIDELITY = FidelityError.exit_code
