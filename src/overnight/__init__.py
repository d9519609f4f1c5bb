"""overnight: a self-hosted Batch API for LLM inference."""

from importlib.metadata import PackageNotFoundError, version

try:
    #: The installed distribution's version: pyproject.toml is its one source.
    __version__ = version("overnight")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
