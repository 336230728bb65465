"""ringvisor: virtualization structures on an IA-32 PC written in Python."""

__version__ = "0.1.0"
