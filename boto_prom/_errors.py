"""The one exception boto-prom raises to its callers."""


class ConfigurationError(ValueError):
    """Bad configuration, found at enable time; its message is one sentence saying what to do."""
