"""Errors that reach the user as one clear line (never a traceback)."""


class RingvisorError(Exception):
    """Base class: the message is shown to the user as is, with exit status 2."""

    exit_status = 2
    diagnostics = ""     # what another program said (a compiler's errors): shown before the line


class ImageError(RingvisorError):
    """A kernel or module image that cannot be loaded."""


class ConfigError(RingvisorError):
    """A bad command-line argument or configuration value."""
