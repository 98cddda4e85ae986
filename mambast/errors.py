"""Error types shown to users as one line (the CLI prints them without a traceback)."""


class MambastError(Exception):
    """Base of every user-facing error of mambast."""


class ImageError(MambastError, ValueError):
    """An input image that cannot be used (missing, not an image, truncated, too large, ...)."""


class WeightsError(MambastError, ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, or not matching the model."""


class FetchError(MambastError, RuntimeError):
    """A pretrained network could not be downloaded, extracted or verified."""
