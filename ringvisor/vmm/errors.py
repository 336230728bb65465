"""What a monitor raises while it works for the guest."""

from __future__ import annotations

from ringvisor.abi import Errno
from ringvisor.hw.faults import CpuFault, UnsupportedFeature


class MonitorStop(UnsupportedFeature):
    """The monitor stops the virtual machine (the guest did something it cannot allow)."""


class GuestFault(CpuFault):
    """An exception the guest must see (raised while emulating on its behalf).

    The rules the hardware applies (``hw.segments``, ``hw.transfers``) raise plain
    ``CpuFault``; the monitor applies them to the guest's own descriptors, so it
    treats both alike: delivered to the guest, never to the monitor."""


def pae_refused(name: str) -> str:
    """The line a monitor stops with when its guest sets CR4.PAE."""
    return (f"{name}: the guest set CR4.PAE: PAE paging is not virtualized here; it runs "
            "on the bare PC and under --mode trapemu, bt, hvm and kvm")


class HypercallError(Exception):
    """A hypercall refused: the guest gets ``-errno`` in EAX (``ParaVirt.do_hypercall``)."""

    def __init__(self, errno: Errno) -> None:
        super().__init__(errno.name)
        self.errno = errno


def fail(errno: Errno):
    """Refuse the hypercall being handled with ``errno``."""
    raise HypercallError(errno)
