"""The syncd process: configuration, CLI, lifecycle, embedded services and HTTP."""

__version__ = "0.1.0"
