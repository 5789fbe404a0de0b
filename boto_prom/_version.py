"""The package version, read from the installed metadata (setup.cfg is the one source)."""

try:
    from importlib.metadata import PackageNotFoundError, version
except ImportError:  # pragma: no cover - Python < 3.8
    from importlib_metadata import PackageNotFoundError, version  # type: ignore[no-redef]

try:
    __version__ = version("boto-prom")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
