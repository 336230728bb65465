"""IRET and far RET load CS and SS with the processor's checks, cached by the
descriptors' bytes (``hw.transfers._RETURNS``): what they load is what the checks on
the descriptor give, every time.

A return to a descriptor whose accessed bit is clear sets the bit in the table and
loads the segment with it (SDM Vol. 3 §3.4.5.1: the processor sets it when it loads
the selector; QEMU's helper_ret_protected loads the descriptor after
``set_desc_accessed`` likewise), so a VM entry, which requires CS and SS accessed
(SDM Vol. 3 §26.3.1.2), accepts the state; and a descriptor changed between two
returns is checked again (a not-present CS after a first return that passed is #NP).
"""

from __future__ import annotations

import struct

import pytest

from ringvisor.hw.bus import IoBus
from ringvisor.hw.cpu import Cpu
from ringvisor.hw.faults import NP, CpuFault
from ringvisor.hw.memory import PhysicalMemory
from ringvisor.hw.state import CR0_PE, Segment

GDT, STACK = 0x1000, 0x8000


def _descriptor(access: int) -> int:
    # base 0, limit 0xFFFFF pages (4 GiB), 32-bit (G, D/B)
    return 0xFFFF | 0xF << 48 | 0xC << 52 | access << 40


def _cpu(code_access: int, data_access: int) -> Cpu:
    mem = PhysicalMemory(1 << 20)
    cpu = Cpu(mem, IoBus())
    gdt = [0, _descriptor(code_access), _descriptor(data_access),
           _descriptor(code_access | 0x60), _descriptor(data_access | 0x60)]
    mem.write(GDT, struct.pack(f"<{len(gdt)}Q", *gdt))
    st = cpu.state
    st.cr0 |= CR0_PE
    st.gdtr.base, st.gdtr.limit = GDT, len(gdt) * 8 - 1
    flat = 0xFFFFFFFF
    st.segs[1] = Segment(0x08, 0, flat, 0xC09B)        # CS, ring 0, accessed
    st.segs[2] = Segment(0x10, 0, flat, 0xC093)
    st.regs[4] = STACK
    cpu.mode_changed()
    return cpu


def _iret(cpu, frame: list[int]) -> None:
    st = cpu.state
    cpu.mem.write(STACK, struct.pack(f"<{len(frame)}I", *frame))
    st.regs[4] = STACK
    st.segs[1] = Segment(0x08, 0, 0xFFFFFFFF, 0xC09B)
    st.segs[2] = Segment(0x10, 0, 0xFFFFFFFF, 0xC093)
    cpu.mode_changed()
    cpu.iret()


@pytest.mark.parametrize("given", [False, True])
def test_return_sets_and_loads_the_accessed_bit(given):
    cpu = _cpu(0x9A, 0x92)            # present code and data, accessed bits clear
    for _ in range(2):                # (the second time from the cache)
        frame = [0x1234, 0x1B, 0x202, 0x7000, 0x23]      # to ring 3
        if given:
            cpu.state.regs[4] = STACK
            cpu.iret(tuple(frame))
        else:
            _iret(cpu, frame)
        st = cpu.state
        assert (st.eip, st.regs[4], cpu.cpl) == (0x1234, 0x7000, 3)
        assert st.segs[1].selector == 0x1B and st.segs[1].attr & 0xFF == 0xFB
        assert st.segs[2].selector == 0x23 and st.segs[2].attr & 0xFF == 0xF3
        assert cpu.mem.read(GDT + 3 * 8 + 5, 1)[0] == 0xFB
        assert cpu.mem.read(GDT + 4 * 8 + 5, 1)[0] == 0xF3
        cpu.state.segs[1] = Segment(0x08, 0, 0xFFFFFFFF, 0xC09B)
        cpu.state.segs[2] = Segment(0x10, 0, 0xFFFFFFFF, 0xC093)
        cpu.mode_changed()


def test_a_changed_descriptor_is_checked_again():
    cpu = _cpu(0x9B, 0x93)
    _iret(cpu, [0x10, 0x1B, 0x202, 0x7000, 0x23])
    assert cpu.cpl == 3
    cpu.mem.write(GDT + 3 * 8 + 5, bytes([0x7B]))       # the ring-3 code: not present
    with pytest.raises(CpuFault) as e:
        _iret(cpu, [0x10, 0x1B, 0x202, 0x7000, 0x23])
    assert (e.value.vector, e.value.error_code) == (NP, 0x18)
    assert cpu.cpl == 0 and cpu.state.regs[4] == STACK   # nothing committed


def test_a_monitor_checks_a_return_to_user_mode_again_when_a_descriptor_changes():
    # Delivery.known_return (an iret hypercall, an emulated IRET to ring 3): what the
    # checks concluded is kept by the descriptors' bytes, so each change below -- which
    # the guest may make between two returns with no entry into the monitor -- is
    # checked again and sent the long way, which raises the SDM's fault
    from types import SimpleNamespace

    from ringvisor.vmm.delivery import Delivery

    table = {0x1B: _descriptor(0xFB), 0x23: _descriptor(0xF3)}
    mon = SimpleNamespace(vcpu=SimpleNamespace(gdt_limit=0xFF, cpl=0),
                          gdt=SimpleNamespace(tracking=False),
                          known_descriptors=lambda a, b: (table[a | 3], table[b | 3]))
    mon._gdt_pair = lambda a, b: Delivery._gdt_pair(mon, a, b)

    def known() -> int | None:
        return Delivery.known_return(mon, 0x1B, 0x23)

    assert known() == known() == 0xFFFFFFFF
    table[0x1B] = _descriptor(0x7B)                  # the user code not present: #NP
    assert known() is None
    table[0x1B] = _descriptor(0xFB) & ~(0xF << 48)   # back, with a limit of 256 MiB
    assert known() == 0xFFFFFFF
    table[0x23] = _descriptor(0xF1)                  # the user stack read-only: #GP
    assert known() is None
    table[0x23] = _descriptor(0xF2)                  # writable, accessed bit clear:
    assert known() == 0xFFFFFFF                      # nothing to set when not tracking
    mon.gdt.tracking = True
    assert known() is None                           # the long way sets it
    mon.vcpu.cpl = 3                                 # (at CPL 3 too: RPL 3 >= CPL)
    table[0x23] = _descriptor(0xF3)
    assert known() == 0xFFFFFFF
    assert Delivery.known_return(mon, 0x1B, 0x20) is None    # RPL 0 stack from ring 3
