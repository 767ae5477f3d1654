"""Errors that tell the user what to change, raised before any training starts."""


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and the valid choices."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable; the message says where to put the file."""
