"""The package version (one place; ``saescope.__version__`` and RUN manifests read it)."""

__version__ = "0.1.0"
