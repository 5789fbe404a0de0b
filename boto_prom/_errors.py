"""The one exception boto-prom raises to its callers."""


class ConfigurationError(ValueError):
    """Bad configuration, found at enable time; its message is one sentence saying what to do."""


ConfigurationError.__module__ = "boto_prom"  # what users import it as, in tracebacks too
