"""Per-VM monitors: trap-and-emulate, binary translation (and later paravirt, hvm, kvm).

``run_vm`` boots a Multiboot guest on a machine with room for a monitor and
runs it under the chosen mode; ``native`` is the bare hardware.
"""

from .runner import MODES, VmResult, attach_monitor, create_bios_vm, create_vm, run_vm

__all__ = ["MODES", "VmResult", "attach_monitor", "create_bios_vm", "create_vm", "run_vm"]
