"""The project's own exceptions: what a command prints as one line and exits 2 on.

Kept free of heavy imports so the command-line layer can catch them before torch is loaded.
"""


class GrokscopeError(Exception):
    """Bad input or a run directory that cannot be used as asked; printed as one line, exit status 2."""


class ConfigError(GrokscopeError, ValueError):
    """Bad configuration value."""


class RunDirError(GrokscopeError):
    """A run directory (or one of its files) that cannot be read or written as asked."""
