"""Exceptions and warnings raised by sleepfm.

Every error a user can cause is a :class:`SleepFMError`; the command line prints its message as one
line and exits non-zero, so messages name the file, record or option and say what to do.
"""


class SleepFMError(Exception):
    """Base class of every error sleepfm raises on purpose."""


class InvalidParameterError(SleepFMError, ValueError):
    """An option, setting or name that is not allowed (the message lists what is)."""


class EDFError(SleepFMError, ValueError):
    """An EDF/BDF file that cannot be read (corrupt, truncated, not an EDF)."""


class ChannelError(SleepFMError, ValueError):
    """No channel of a recording could be placed in a modality, or a channel is unusable."""


class SignalError(SleepFMError, ValueError):
    """A signal that cannot be processed (flat, non-finite, zero length, bad sampling rate)."""


class LabelError(SleepFMError, ValueError):
    """A label file that is missing, malformed or does not match its recording."""


class StoreError(SleepFMError, OSError):
    """A run directory, store or saved artefact that is missing, out of order or inconsistent."""


class NotFittedError(SleepFMError, AttributeError):
    """A model or head used before ``fit``."""


class DataWarning(UserWarning):
    """Data was repaired or trimmed; the message says how."""


class ConvergenceWarning(UserWarning):
    """Training stopped before it converged."""
