"""The package version (light: no imports)."""

__version__ = "0.1.0"
