"""Where a vCPU's shared state lives: its ``vcpu_info`` and its runstate area.

Xen's ``VCPUOP_register_vcpu_info`` and ``VCPUOP_register_runstate_memory_area``
(public/vcpu.h; common/domain.c ``map_vcpu_info`` and ``common_vcpu_op``):

- ``register_vcpu_info`` moves a vCPU's ``vcpu_info`` out of its legacy slot
  in the shared-info page to a place of the guest's choosing (a per-CPU area):
  a frame of its own (``mfn``: here a pseudo-physical frame, the guests being
  auto-translated) and an ``offset`` in it.  The slot must not cross the page
  (``offset > PAGE_SIZE - sizeof(vcpu_info)``), it is registered once, only by
  the vCPU itself or for a vCPU that is down, and only in a frame the domain
  owns as ordinary memory (not one of its pinned page tables): -EINVAL for
  each, as Xen.  The old slot's contents are copied there, every selector bit
  is set and an upcall made pending (Xen: "mark everything as being pending
  just to make sure nothing gets lost"); from then on the hypervisor reads and
  writes that vCPU's mask, pending flags, time and CR2 there (``evtchn.info``).
- ``register_runstate_memory_area`` gives a guest virtual address where the
  hypervisor keeps a ``vcpu_runstate_info`` up to date: written at once, and at
  every context switch for the vCPU going off the CPU and the one coming on
  (Xen's ``update_runstate_area``), through the vCPU's own page tables.  The
  address must lie below the hypervisor's region (-EFAULT: Xen's
  ``guest_handle_okay``); 0 stops the updates.  A write that faults is
  skipped, as Xen ignores a failed copy there.

Both are a vCPU's state that a save carries (``domsave``): the pseudo-physical
frame and offset, and the virtual address -- neither names a machine frame.
"""

from __future__ import annotations

from ringvisor.abi import (VCPU_INFO, VCPU_REGISTER_RUNSTATE_MEMORY_AREA,
                           VCPU_REGISTER_VCPU_INFO, VCPU_RUNSTATE_INFO, Errno)
from ringvisor.vmm import layout as L
from ringvisor.vmm.guestmem import GuestBadFrame, GuestPageFault
from ringvisor.vmm.errors import HypercallError

from .domain import Vcpu

PAGE = 0x1000
SEL = VCPU_INFO.offset("evtchn_pending_sel")
UPCALL = VCPU_INFO.offset("evtchn_upcall_pending")


def register_vcpu_info(m, v: Vcpu, arg: int) -> int:
    """VCPUOP_register_vcpu_info for vCPU ``v`` of ``m``'s domain."""
    r = VCPU_REGISTER_VCPU_INFO.unpack(m._read(arg, VCPU_REGISTER_VCPU_INFO.size))
    gfn, offset = r["mfn"], r["offset"]
    d = v.dom
    if offset > PAGE - VCPU_INFO.size:
        raise HypercallError(Errno.EINVAL)         # the slot would cross the page
    if v.vcpu_info_at is not None:
        raise HypercallError(Errno.EINVAL)         # once per vCPU
    if v.vcpu_id != m.loaded and v.online:
        raise HypercallError(Errno.EINVAL)         # itself, or a vCPU that is down
    mfn = d.p2m.get(gfn)
    if mfn is None or gfn in d.foreign or mfn in m.pinned:
        raise HypercallError(Errno.EINVAL)         # not an ordinary frame of its own
    mem, events = m.mem, d.events
    ma = (mfn << 12) + offset
    mem.write(ma, mem.read(events.info(v.vcpu_id), VCPU_INFO.size))
    place(m, v, gfn, offset)
    mem.write32(ma + SEL, 0xFFFFFFFF)
    if not mem.read8(ma + UPCALL):
        mem.write8(ma + UPCALL, 1)
        m.hv.event_for(v)
    return 0


def place(m, v: Vcpu, gfn: int, offset: int) -> None:
    """``v``'s vcpu_info is at ``offset`` in its frame ``gfn`` (a registration, a
    restore): the monitor reads and writes it there from now on."""
    v.vcpu_info_at = (gfn, offset)
    v.vcpu_info_ma = m._frame(gfn) + offset
    if v.vcpu_id == m.loaded:
        m.point_at_vcpu_info()


def register_runstate_area(m, v: Vcpu, arg: int) -> int:
    """VCPUOP_register_runstate_memory_area for vCPU ``v``."""
    va = VCPU_REGISTER_RUNSTATE_MEMORY_AREA.unpack(
        m._read(arg, VCPU_REGISTER_RUNSTATE_MEMORY_AREA.size))["addr"]
    if va + VCPU_RUNSTATE_INFO.size - 1 > L.GUEST_LIMIT:
        raise HypercallError(Errno.EFAULT)
    v.runstate_va = va
    with m.on_vcpu(v.vcpu_id):
        update_runstate_area(v)
    return 0


def runstate_info(v: Vcpu, now_ns: int, time_offset_ns: int) -> dict:
    """``v``'s vcpu_runstate_info at ``now_ns``: the time of its present state counted in,
    its entry time in the domain's own system time."""
    times = list(v.runstate_ns)
    times[v.runstate] += max(0, now_ns - v.state_entry_ns)
    return {"state": v.runstate, "time": times,
            "state_entry_time": max(0, v.state_entry_ns - time_offset_ns)}


def update_runstate_area(v: Vcpu) -> None:
    """Write ``v``'s runstate where it asked (its monitor has ``v`` loaded)."""
    if not v.runstate_va or v.dom.dead:
        return
    m = v.dom.monitor
    data = VCPU_RUNSTATE_INFO.pack(runstate_info(v, m.hv.clock.now_ns(), m.time_offset_ns))
    try:
        m.gm.write(v.runstate_va, data)
    except (GuestPageFault, GuestBadFrame):
        pass                                       # (Xen ignores a failed copy)


def saved(v: Vcpu) -> dict:
    """``v``'s registrations, for a save: no machine frame in them."""
    return {"vcpu_info": list(v.vcpu_info_at) if v.vcpu_info_at else None,
            "runstate_va": v.runstate_va}


def restored(m, v: Vcpu, rec: dict) -> None:
    """Put back what ``saved`` gave (the memory is in place: nothing is copied)."""
    at = rec.get("vcpu_info")
    if at is not None:
        gfn, offset = int(at[0]), int(at[1])
        if offset > PAGE - VCPU_INFO.size or gfn in v.dom.foreign or gfn not in v.dom.p2m:
            raise ValueError("a vcpu_info outside the domain's frames")
        place(m, v, gfn, offset)
    v.runstate_va = int(rec.get("runstate_va", 0))

