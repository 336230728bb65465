"""The ABI contract (ringvisor.abi): Xen's numbers and layouts, the
checked-in C header, and gcc's agreement with every offset."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from ringvisor import abi
from ringvisor.abi import (
    MMUEXT_OP, SHARED_INFO, START_INFO, STRUCTS, TRAP_INFO, VCPU_INFO, Errno, EvtchnOp,
    Hypercall, Mmuext, SchedOp, Struct)
from ringvisor.guests.build import SOURCE_DIR, abi_header_path

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")


def test_checked_in_header_is_current():
    path = abi_header_path()
    assert path.read_text() == abi.c_header(), (
        f"{path} is stale: regenerate it with 'ringvisor pvabi-header'")


def test_pvabi_header_cli_writes_the_same_text(tmp_path):
    out = tmp_path / "h" / "xen_abi.h"
    p = subprocess.run([sys.executable, "-m", "ringvisor", "pvabi-header", "--output", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert out.read_text() == abi.c_header()
    assert not list(out.parent.glob("*.tmp"))


# Facts stated in Xen's public headers, written here independently of the
# layout code.
def test_xen_documented_layouts():
    assert VCPU_INFO.size == 64                                  # "64 bytes (x86)"
    assert abi.VCPU_TIME_INFO.size == 32                       # "32 bytes"
    assert VCPU_INFO.offset("evtchn_upcall_pending") == 0
    assert VCPU_INFO.offset("evtchn_upcall_mask") == 1
    assert VCPU_INFO.offset("evtchn_pending_sel") == 4
    assert VCPU_INFO.offset("arch.cr2") == 8
    assert VCPU_INFO.offset("time") == 32
    # shared_info: 32 vcpu_info, then 32-word pending and mask bitmaps
    assert SHARED_INFO.offset("vcpu_info[1]") == 64
    assert SHARED_INFO.offset("evtchn_pending") == 32 * 64
    assert SHARED_INFO.offset("evtchn_mask") == 32 * 64 + 128
    assert SHARED_INFO.offset("wc_version") == 32 * 64 + 256
    assert SHARED_INFO.offset("arch") == 32 * 64 + 256 + 12
    assert SHARED_INFO.size <= 4096                              # one page
    assert START_INFO.offset("nr_pages") == 32
    assert START_INFO.offset("shared_info") == 36
    assert START_INFO.offset("cmd_line") == 80
    assert abi.START_INFO_MAGIC == b"xen-3.0-x86_32"
    assert TRAP_INFO.size == 8 and MMUEXT_OP.size == 12 and abi.MMU_UPDATE.size == 16
    assert abi.EVTCHN_BIND_PIRQ.offset("port") == 8
    assert abi.CALLBACK_REGISTER.offset("address.eip") == 8


def test_xen_numbers():
    assert (Hypercall.set_trap_table, Hypercall.mmu_update, Hypercall.set_gdt,
            Hypercall.stack_switch, Hypercall.set_callbacks, Hypercall.fpu_taskswitch) == tuple(range(6))
    assert Hypercall.update_descriptor == 10 and Hypercall.update_va_mapping == 14
    assert Hypercall.set_timer_op == 15 and Hypercall.xen_version == 17
    assert Hypercall.console_io == 18 and Hypercall.vm_assist == 21 and Hypercall.iret == 23
    assert Hypercall.vcpu_op == 24 and Hypercall.mmuext_op == 26 and Hypercall.sched_op == 29
    assert Hypercall.callback_op == 30 and Hypercall.event_channel_op == 32
    assert Hypercall.physdev_op == 33 and Hypercall.rv_machine_op == 48
    assert Hypercall(48) is Hypercall.rv_machine_op
    assert Mmuext.NEW_BASEPTR == 5 and Mmuext.INVLPG_LOCAL == 7 and Mmuext.UNPIN_TABLE == 4
    assert SchedOp.block == 1 and EvtchnOp.bind_pirq == 2 and EvtchnOp.unmask == 9
    assert Errno.EINVAL == 22 and Errno.ENOSYS == 38 and Errno.EFAULT == 14
    assert abi.DomId.SELF == 0x7FF0 and abi.FlatSel.RING1_CS == 0xE019
    consts = abi.c_constants()
    assert consts["SCHEDOP_yield"] == 0 and consts["VMASST_TYPE_4gb_segments"] == 0
    assert consts["XEN_EPERM"] == 1 and consts["__HYPERVISOR_arch_0"] == 48


def test_management_and_ring_layouts():
    # domctl.h: the union after domid_t is 8-aligned (it holds uint64_aligned_t), pad[128]
    assert abi.DOMCTL.offset("u") == 16 and abi.DOMCTL.size == 16 + 128
    assert abi.SYSCTL.offset("u") == 8 and abi.SYSCTL.size == 8 + 128
    gi = abi.DOMCTL_GETDOMAININFO
    assert gi.offset("flags") == 4 and gi.offset("tot_pages") == 8 and gi.offset("cpu_time") == 56
    assert gi.offset("nr_online_vcpus") == 64 and gi.offset("handle") == 76
    assert abi.DOMCTL_SCHEDULER_OP.offset("u.credit.cap") == 10
    assert abi.CPU_USER_REGS.size == 68                       # x86_32 cpu_user_regs
    assert abi.VCPU_GUEST_CONTEXT.offset("user_regs") == 516
    assert abi.SYSCTL_PHYSINFO.offset("total_pages") == 32
    # grant_table.h
    assert abi.GRANT_ENTRY_V1.size == 8 and abi.GRANT_ENTRY_V1.offset("frame") == 4
    m = abi.GNTTAB_MAP_GRANT_REF
    assert (m.offset("flags"), m.offset("ref"), m.offset("dom"), m.offset("status"),
            m.offset("handle"), m.offset("dev_bus_addr"), m.size) == (8, 12, 16, 18, 20, 24, 32)
    assert abi.GNTTAB_COPY.offset("len") == 16 and abi.GNTTAB_COPY.size == 24
    assert abi.XEN_ADD_TO_PHYSMAP.offset("gpfn") == 12
    # io/console.h and io/xs_wire.h
    assert abi.XENCONS_INTERFACE.offset("out") == 1024 and abi.XENCONS_INTERFACE.offset("in_cons") == 3072
    assert abi.XENSTORE_DOMAIN_INTERFACE.offset("req_cons") == 2048
    assert abi.XSD_SOCKMSG.size == 16


def test_management_numbers():
    D, S = abi.Domctl, abi.Sysctl
    assert (D.createdomain, D.destroydomain, D.pausedomain, D.unpausedomain, D.getdomaininfo) == (1, 2, 3, 4, 5)
    assert D.max_mem == 11 and D.getvcpucontext == 13 and D.scheduler_op == 16
    assert S.readconsole == 1 and S.physinfo == 3 and S.getdomaininfolist == 6
    assert abi.Hypercall.domctl == 36 and abi.Hypercall.sysctl == 35 and abi.Hypercall.xsm_op == 27
    assert abi.GnttabOp.copy == 5 and abi.GnttabOp.query_size == 6 and abi.Gtf.readonly == 4
    assert abi.MemOp.decrease_reservation == 1 and abi.MemOp.add_to_physmap == 7
    assert abi.XsType.WATCH_EVENT == 15 and abi.XsType.ERROR == 16 and abi.XsType.TRANSACTION_END == 7
    assert abi.Scheduler.credit == 5 and abi.DomInfoFlag.paused == 8 and abi.FlaskOp.access == 6
    assert abi.XSD_ERRORS[:2] == ("EINVAL", "EACCES")


def test_every_c_name_is_defined_once():
    from ringvisor.abi.header import CONSTANT_GROUPS, SINGLE_CONSTANTS, member_name
    names = [prefix + member_name(k) for e, prefix, _ in CONSTANT_GROUPS for k in e.__members__]
    names += [n for n, _ in SINGLE_CONSTANTS]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, dup


def test_the_abi_imports_nothing_of_ringvisor():
    import ast
    from pathlib import Path
    for f in Path(abi.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("ringvisor"), f"{f.name}: {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("ringvisor") for a in node.names), f.name


def test_fixed_addresses_sit_below_the_hypervisor_region():
    from ringvisor.vmm.layout import MLIN
    assert abi.PV_SHARED_INFO_VA + 4096 == MLIN
    assert abi.PV_START_INFO_VA == abi.PV_BOOT_STACK_TOP == abi.PV_BOOT_STACK_VA + 4096
    assert abi.PV_UPCALL_MASK_VA == 0xFFBFF001 and abi.PV_CR2_VA == 0xFFBFF008


def test_pack_and_unpack_round_trip():
    data = TRAP_INFO.pack(vector=0x80, flags=3, cs=0x09, address=0xC0100000)
    assert data == bytes([0x80, 3, 9, 0, 0, 0, 0x10, 0xC0])
    assert TRAP_INFO.unpack(data) == {"vector": 0x80, "flags": 3, "cs": 9, "address": 0xC0100000}
    op = MMUEXT_OP.unpack(MMUEXT_OP.pack(cmd=Mmuext.NEW_BASEPTR, arg1={"mfn": 0x1234}))
    assert op["cmd"] == 5 and op["arg1"]["mfn"] == op["arg1"]["linear_addr"] == 0x1234
    si = START_INFO.pack(magic=abi.START_INFO_MAGIC, nr_pages=8192)
    assert START_INFO.unpack(si)["magic"].rstrip(b"\0") == b"xen-3.0-x86_32"
    page = bytearray(4096)
    page[:SHARED_INFO.size] = SHARED_INFO.pack({"vcpu_info": [{"evtchn_upcall_mask": 1}]})
    assert page[1] == 1
    with pytest.raises(KeyError):
        SHARED_INFO.offset("vcpu_info[32]")
    with pytest.raises(KeyError):
        SHARED_INFO.offset("evtchn_pending.x")


def _c_checks() -> str:
    lines = ['#include <stddef.h>', '#include "pv/xen_abi.h"', ""]

    def walk(s: Struct, cname: str, prefix: str, base: int):
        for f in s.fields:
            path = prefix + f.name
            off = base + s.offsets[f.name]
            lines.append(f'_Static_assert(offsetof({cname}, {path}) == {off}, "{cname} {path}");')
            lines.append(f'_Static_assert(sizeof((({cname} *)0)->{path}) == '
                         f'{f.type.size * (f.count or 1)}, "sizeof {cname} {path}");')
            if isinstance(f.type, Struct) and f.count is None:
                walk(f.type, cname, path + ".", off)
    for s in STRUCTS:
        lines.append(f'_Static_assert(sizeof({s.c_type}) == {s.size}, "sizeof {s.name}");')
        lines.append(f'_Static_assert(_Alignof({s.c_type}) == {s.align}, "align {s.name}");')
        walk(s, s.c_type, "", 0)
        for path, off in s.member_paths():
            macro = f"OFFSETOF_{s.name}_{path.replace('.', '_')}"
            lines.append(f'_Static_assert({macro} == offsetof({s.c_type}, {path}), "{macro}");')
    for name, value in abi.c_constants().items():
        lines.append(f'_Static_assert({name} == {value}, "{name}");')
    return "\n".join(lines) + "\n"


@needs_gcc
def test_gcc_agrees_with_every_offset(tmp_path):
    src = tmp_path / "check.c"
    src.write_text(_c_checks())
    p = subprocess.run(["gcc", "-m32", "-ffreestanding", "-std=gnu11", "-Wall", "-Werror",
                        "-fsyntax-only", f"-I{SOURCE_DIR / 'include'}", str(src)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[:4000]


@needs_gcc
def test_header_is_usable_from_assembly(tmp_path):
    src = tmp_path / "a.S"
    src.write_text('#include "pv/xen_abi.h"\n'
                   "    movl $__HYPERVISOR_iret, %eax\n"
                   "    movb $1, PV_UPCALL_MASK_VA\n"
                   "    movl PV_SHARED_INFO_VA + OFFSETOF_shared_info_evtchn_pending, %eax\n")
    p = subprocess.run(["gcc", "-m32", "-c", f"-I{SOURCE_DIR / 'include'}", str(src),
                        "-o", str(tmp_path / "a.o")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
