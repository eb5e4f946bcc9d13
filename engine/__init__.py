"""bulkio's engine: the import and export pipelines, jobs, queue, storage and settings."""

from importlib.metadata import PackageNotFoundError, version

try:
    #: The installed distribution's version, which maturin took from native/Cargo.toml.
    __version__ = version("bulkio")
except PackageNotFoundError:  # the source tree on sys.path without an install (setup --no-build)
    __version__ = "0+unknown"
