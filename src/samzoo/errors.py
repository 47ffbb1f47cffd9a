"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class SamzooError(Exception):
    """Base class for every error caused by the user's input or environment, not by a bug."""


class InputError(SamzooError, ValueError):
    """An image, prompt or parameter that samzoo cannot use."""


class CheckpointError(SamzooError):
    """A checkpoint that cannot be read or does not fit the architecture it claims."""


class PackageIntegrityError(CheckpointError):
    """A BioImage.IO package whose description is invalid, or whose files are missing or differ from
    the sha256 its description records; the message names the file or field."""


class ModelNotFoundError(SamzooError, LookupError):
    """An ID or path that does not resolve to a model."""


class CardError(SamzooError, ValueError):
    """A model card with missing required fields or invalid values (the message lists all of them)."""


class PublishError(SamzooError):
    """Publishing to Zenodo or Hugging Face stopped for a reason the user can fix (token, metadata, state)."""


class RegistryError(SamzooError, ValueError):
    """A model registry file (shipped or user-supplied) that breaks the registry format."""


class DownloadError(ModelNotFoundError):
    """A model file that could not be downloaded (HTTP error, timeout, broken transfer); nothing was cached."""


class HashMismatchError(DownloadError):
    """A downloaded file whose hash differs from the expected one; it was discarded, nothing was cached."""


class OfflineError(ModelNotFoundError):
    """A model that is not in the cache while offline mode (SAMZOO_OFFLINE=1) forbids downloading it."""
