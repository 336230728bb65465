"""Settings for the whole suite (pytest loads this before it starts its workers)."""

from __future__ import annotations

import os
import sys

# Bytecode is a cache: the suite starts some 200 Python processes (xdist's workers, and
# `python -m ringvisor` in the CLI tests), and where PYTHONDONTWRITEBYTECODE is set (some
# sandboxes set it) none of them could keep what it compiled, so each compiled ringvisor's
# modules from source again (0.5 s of CPU apiece) and each worker rewrote every test
# module's asserts (~4 s).  The suite writes __pycache__ (ignored by git) and reads it back.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
