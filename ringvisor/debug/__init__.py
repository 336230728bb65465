"""Debugging a running guest from the host: the GDB remote protocol (gdbstub.py)."""
