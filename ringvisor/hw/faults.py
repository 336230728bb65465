"""CPU exceptions as Python exceptions raised by instruction semantics.

A fault unwinds out of the translated block (which first writes the
architectural state back as of the start of the faulting instruction) to the
CPU's run loop, which delivers it through the IDT.
"""

from __future__ import annotations

DE, DB, NMI, BP, OF, BR, UD, NM, DF, TS, NP, SS, GP, PF, MF, AC, MC, XM = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19)

NAMES = {DE: "#DE", DB: "#DB", NMI: "NMI", BP: "#BP", OF: "#OF", BR: "#BR", UD: "#UD",
         NM: "#NM", DF: "#DF", TS: "#TS", NP: "#NP", SS: "#SS", GP: "#GP", PF: "#PF",
         MF: "#MF", AC: "#AC", MC: "#MC", XM: "#XM"}

# Exceptions that push an error code (SDM Vol. 3, Table 6-1).
HAS_ERROR_CODE = frozenset({DF, TS, NP, SS, GP, PF, AC})
# Contributory class, for the double-fault rules (SDM Vol. 3, Table 6-5).
CONTRIBUTORY = frozenset({DE, TS, NP, SS, GP})


class CpuFault(Exception):
    """An exception (fault or trap) raised while executing an instruction.

    ``trap`` marks exceptions reported after the instruction (INT n, INTO, INT3,
    single-step): the saved EIP then points past it.
    """

    __slots__ = ("vector", "error_code", "trap", "soft", "in_new_task")

    def __init__(self, vector: int, error_code: int | None = None, trap: bool = False,
                 soft: bool = False) -> None:
        super().__init__(vector, error_code)
        self.vector = vector
        self.error_code = error_code
        self.trap = trap
        self.soft = soft    # INT n / INT3 / INTO: gate DPL is checked against CPL
        # raised past a task switch's commit point (tasks.py): the state is already the
        # new task's, and the exception is delivered there as a new event (SDM Vol. 3
        # §7.3), not combined with the one that caused the switch into a double fault
        self.in_new_task = False

    def __str__(self) -> str:
        name = NAMES.get(self.vector, f"vector {self.vector:#x}")
        if self.error_code is not None:
            return f"{name}({self.error_code:#x})"
        return name


class PageFault(CpuFault):
    __slots__ = ("address",)

    def __init__(self, address: int, error_code: int) -> None:
        super().__init__(PF, error_code)
        self.address = address


def gp(code: int = 0) -> CpuFault:
    return CpuFault(GP, code)


def ud() -> CpuFault:
    return CpuFault(UD)


class TripleFault(Exception):
    """The CPU shut down: a fault while delivering a double fault."""


class VmExitFault(CpuFault):
    """An event that in VMX non-root operation leaves the guest instead of reaching its
    IDT (an EPT violation, a task switch): ``take(vmx)`` performs the VM exit."""

    __slots__ = ()

    def take(self, vmx) -> None:
        raise NotImplementedError


class UnsupportedFeature(Exception):
    """The guest used something this machine does not model (e.g. a hardware task switch).

    Real hardware would do it; inventing a fault would mislead the guest, so the
    machine stops with a report instead.
    """
