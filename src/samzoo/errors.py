"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class SamzooError(Exception):
    """Base class for every error caused by the user's input or environment, not by a bug."""


class InputError(SamzooError, ValueError):
    """An image, prompt or parameter that samzoo cannot use."""


class CheckpointError(SamzooError):
    """A checkpoint that cannot be read or does not fit the architecture it claims."""


class ModelNotFoundError(SamzooError, LookupError):
    """An ID or path that does not resolve to a model."""
