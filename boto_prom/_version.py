"""The package version, read from the installed metadata (setup.cfg is the one source)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("boto-prom")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
