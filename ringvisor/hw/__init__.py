"""The hardware: an IA-32 PC. Imports nothing else of ringvisor except ringvisor.errors."""
