"""Errors a user can act on: each names the file or the point and what is wrong with it."""


class SpineCascadeError(Exception):
    """Base class of every error the package raises on purpose."""


class ImageError(SpineCascadeError):
    """An image file cannot be read as a 2D radiograph."""


class LabelError(SpineCascadeError):
    """A landmark label is missing, malformed or implausible."""


class ModelFileError(SpineCascadeError):
    """A model file is missing, corrupt, truncated or of an incompatible version."""
