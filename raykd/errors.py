"""User-facing errors: one clear paragraph, no traceback, raised before training starts."""


class RaykdError(Exception):
    """Base for errors caused by user input; the CLI prints the message alone."""


class ConfigError(RaykdError):
    """A config file, key, value or override is invalid."""


class DataError(RaykdError):
    """A dataset path is missing or laid out wrongly."""


class ResourceError(RaykdError):
    """The requested resources can never be satisfied by the cluster."""


class NonFiniteLossError(RaykdError):
    """A loss term became NaN or inf; the message names the step and the term."""


class CheckpointError(RaykdError):
    """A checkpoint a resume needs is missing or unreadable; the message names the file."""
