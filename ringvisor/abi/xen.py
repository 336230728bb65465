"""Xen's public interface for an x86_32 para-virtual guest, as data.

The numbers and structure layouts the PV guest and the hypervisor must agree
on (as Xen's ``xen/include/public`` holds them): ``xen.h``,
``arch-x86/xen.h``, ``arch-x86/xen-x86_32.h``, ``event_channel.h``,
``sched.h``, ``vcpu.h``, ``callback.h``, ``physdev.h``, ``version.h``,
``errno.h``.  ringvisor's own additions are the ``rv_machine_op`` hypercall in
Xen's architecture-specific range and the fixed guest virtual addresses of
docs/paravirt.md.  The management interfaces (domctl, sysctl, XSM) are in
``control``, memory and grant tables in ``grant``, the xenstore and console
rings in ``rings``.

From Python::

    SHARED_INFO.offset("vcpu_info[0].evtchn_upcall_mask")   # -> 1
    SHARED_INFO.offset("evtchn_pending")                    # -> 2048
    TRAP_INFO.pack(vector=14, flags=4, cs=0x09, address=0xC0101234)
    MMUEXT_OP.unpack(data)["arg1"]["mfn"]
    Hypercall.mmuext_op, Mmuext.NEW_BASEPTR, -Errno.EINVAL
"""

from __future__ import annotations

from enum import IntEnum

from .cstruct import (CHAR, DOMID, I8, INT, PORT, PTR, U8, U16, U32, U64, UINT, ULONG, XEN_PFN,
                      XEN_ULONG, Field, Struct)

# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------

HYPERCALL_VECTOR = 0x82          # int $0x82: Xen's x86_32 hypercall trap


class Hypercall(IntEnum):
    """Hypercall numbers (xen.h); ``rv_machine_op`` is ringvisor's, at
    ``__HYPERVISOR_arch_0``."""

    set_trap_table = 0
    mmu_update = 1
    set_gdt = 2
    stack_switch = 3
    set_callbacks = 4
    fpu_taskswitch = 5
    sched_op_compat = 6
    platform_op = 7
    set_debugreg = 8
    get_debugreg = 9
    update_descriptor = 10
    memory_op = 12
    multicall = 13
    update_va_mapping = 14
    set_timer_op = 15
    event_channel_op_compat = 16
    xen_version = 17
    console_io = 18
    physdev_op_compat = 19
    grant_table_op = 20
    vm_assist = 21
    update_va_mapping_otherdomain = 22
    iret = 23
    vcpu_op = 24
    set_segment_base = 25
    mmuext_op = 26
    xsm_op = 27
    nmi_op = 28
    sched_op = 29
    callback_op = 30
    xenoprof_op = 31
    event_channel_op = 32
    physdev_op = 33
    hvm_op = 34
    sysctl = 35
    domctl = 36
    kexec_op = 37
    rv_machine_op = 48          # = __HYPERVISOR_arch_0
    arch_0 = 48
    rv_blkback_op = 49          # = __HYPERVISOR_arch_1: the in-hypervisor block back-end
    arch_1 = 49


# The arguments of each hypercall in ebx, ecx, edx, esi, edi (Xen's x86_32
# prototypes; a 64-bit argument takes two registers, low half first).
HYPERCALL_ARGS: dict[Hypercall, tuple[str, ...]] = {
    Hypercall.set_trap_table: ("const trap_info_t traps[] (ends with address 0)",),
    Hypercall.mmu_update: ("const mmu_update_t reqs[]", "count", "unsigned *done_out", "foreigndom"),
    Hypercall.set_gdt: ("const xen_pfn_t frames[]", "entries"),
    Hypercall.stack_switch: ("ss", "esp"),
    Hypercall.set_callbacks: ("event_selector", "event_address", "failsafe_selector",
                              "failsafe_address"),
    Hypercall.fpu_taskswitch: ("set",),
    Hypercall.update_descriptor: ("ma_lo", "ma_hi", "desc_lo", "desc_hi"),
    Hypercall.update_va_mapping: ("va", "val_lo", "val_hi", "flags (UVMF_*)"),
    Hypercall.set_timer_op: ("timeout_lo", "timeout_hi"),
    Hypercall.xen_version: ("cmd (XENVER_*)", "void *arg"),
    Hypercall.console_io: ("cmd (CONSOLEIO_*)", "count", "char *buffer"),
    Hypercall.vm_assist: ("cmd (VMASST_CMD_*)", "type (VMASST_TYPE_*)"),
    Hypercall.iret: ("the stack holds eax, eip, cs, eflags [, esp, ss]",),
    Hypercall.vcpu_op: ("cmd (VCPUOP_*)", "vcpuid", "void *extra"),
    Hypercall.mmuext_op: ("const mmuext_op_t ops[]", "count", "unsigned *done_out",
                          "foreigndom"),
    Hypercall.sched_op: ("cmd (SCHEDOP_*)", "void *arg"),
    Hypercall.callback_op: ("cmd (CALLBACKOP_*)", "void *arg"),
    Hypercall.event_channel_op: ("cmd (EVTCHNOP_*)", "void *arg"),
    Hypercall.physdev_op: ("cmd (PHYSDEVOP_*)", "void *arg"),
    Hypercall.memory_op: ("cmd (XENMEM_*)", "void *arg"),
    Hypercall.grant_table_op: ("cmd (GNTTABOP_*)", "void *uop", "count"),
    Hypercall.xsm_op: ("xen_flask_op_t *op",),
    Hypercall.sysctl: ("xen_sysctl_t *op",),
    Hypercall.hvm_op: ("cmd (HVMOP_*)", "xen_hvm_param_t *arg"),
    Hypercall.domctl: ("xen_domctl_t *op",),
    Hypercall.rv_machine_op: ("cmd (RV_*)", "a", "b"),
    Hypercall.rv_blkback_op: ("cmd (RV_BLKBACK_*)", "struct rv_blkback_op *"),
}


class RvMachineOp(IntEnum):
    """``rv_machine_op`` commands (docs/paravirt.md): what a Xen PV guest
    never does because Xen boots it already paged."""

    WRITE_CR = 0      # a = 0 or 4, b = value
    READ_CR = 1       # a = 0, 3 or 4 -> the virtual register
    LTR = 2           # a = selector of the guest's TSS in its GDT
    VA_TO_MFN = 3     # a = linear address -> machine frame (or -EFAULT)
    IRQ_VECTOR = 4    # a = ISA IRQ -> the vector the guest's virtual PIC maps it to


class Mmu(IntEnum):
    """``mmu_update``: the command in ``ptr[1:0]``."""

    NORMAL_PT_UPDATE = 0
    MACHPHYS_UPDATE = 1
    PT_UPDATE_PRESERVE_AD = 2
    PT_UPDATE_NO_TRANSLATE = 3


class Mmuext(IntEnum):
    """``mmuext_op`` commands."""

    PIN_L1_TABLE = 0
    PIN_L2_TABLE = 1
    PIN_L3_TABLE = 2
    PIN_L4_TABLE = 3
    UNPIN_TABLE = 4
    NEW_BASEPTR = 5
    TLB_FLUSH_LOCAL = 6
    INVLPG_LOCAL = 7
    TLB_FLUSH_MULTI = 8
    INVLPG_MULTI = 9
    TLB_FLUSH_ALL = 10
    INVLPG_ALL = 11
    FLUSH_CACHE = 12
    SET_LDT = 13
    NEW_USER_BASEPTR = 15
    CLEAR_PAGE = 16
    COPY_PAGE = 17
    FLUSH_CACHE_GLOBAL = 18
    MARK_SUPER = 19
    UNMARK_SUPER = 20


class Uvmf(IntEnum):
    """``update_va_mapping`` flags (may be ORed)."""

    NONE = 0
    TLB_FLUSH = 1
    INVLPG = 2
    FLUSHTYPE_MASK = 3
    MULTI = 0
    LOCAL = 0
    ALL = 4


class ConsoleIO(IntEnum):
    write = 0
    read = 1


class VmAssistCmd(IntEnum):
    enable = 0
    disable = 1


class VmAssistType(IntEnum):
    _4gb_segments = 0
    _4gb_segments_notify = 1
    writable_pagetables = 2
    pae_extended_cr3 = 3
    architectural_iopl = 4
    runstate_update_flag = 5
    m2p_strict = 32


class DomId(IntEnum):
    SELF = 0x7FF0
    FIRST_RESERVED = 0x7FF0
    IO = 0x7FF1
    XEN = 0x7FF2
    COW = 0x7FF3
    INVALID = 0x7FF4
    IDLE = 0x7FFF


class Virq(IntEnum):
    TIMER = 0
    DEBUG = 1
    CONSOLE = 2
    DOM_EXC = 3
    TBUF = 4
    DEBUGGER = 6
    XENOPROF = 7
    CON_RING = 8
    PCPU_STATE = 9
    MEM_EVENT = 10
    ARGO = 11
    ENOMEM = 12
    XENPMU = 13
    ARCH_0 = 16


class SchedOp(IntEnum):
    yield_ = 0
    block = 1
    shutdown = 2
    poll = 3
    remote_shutdown = 4
    shutdown_code = 5
    watchdog = 6
    pin_override = 7


class Shutdown(IntEnum):
    poweroff = 0
    reboot = 1
    suspend = 2
    crash = 3
    watchdog = 4
    soft_reset = 5


class EvtchnOp(IntEnum):
    bind_interdomain = 0
    bind_virq = 1
    bind_pirq = 2
    close = 3
    send = 4
    status = 5
    alloc_unbound = 6
    bind_ipi = 7
    bind_vcpu = 8
    unmask = 9
    reset = 10
    init_control = 11
    expand_array = 12
    set_priority = 13


class EvtchnStat(IntEnum):
    closed = 0
    unbound = 1
    interdomain = 2
    pirq = 3
    virq = 4
    ipi = 5


class VcpuOp(IntEnum):
    initialise = 0
    up = 1
    down = 2
    is_up = 3
    get_runstate_info = 4
    register_runstate_memory_area = 5
    set_periodic_timer = 6
    stop_periodic_timer = 7
    set_singleshot_timer = 8
    stop_singleshot_timer = 9
    register_vcpu_info = 10
    send_nmi = 11
    get_physid = 12
    register_vcpu_time_memory_area = 13


class Runstate(IntEnum):
    """``RUNSTATE_*``: vcpu_runstate_info.state, where a vCPU's time goes (vcpu.h)."""

    running = 0
    runnable = 1
    blocked = 2
    offline = 3


class CallbackType(IntEnum):
    event = 0
    failsafe = 1
    syscall = 2
    sysenter_deprecated = 3
    nmi = 4
    sysenter = 5
    syscall32 = 7


class CallbackOp(IntEnum):
    register = 0
    unregister = 1


class PhysdevOp(IntEnum):
    irq_status_query = 5
    set_iopl = 6
    set_iobitmap = 7
    apic_read = 8
    apic_write = 9
    alloc_irq_vector = 10
    free_irq_vector = 11
    eoi = 12
    map_pirq = 13
    unmap_pirq = 14


class HvmOp(IntEnum):
    """``HVMOP_*`` (hvm/hvm_op.h): the parameters of an auto-translated guest."""

    set_param = 0
    get_param = 1


class HvmParam(IntEnum):
    """``HVM_PARAM_*`` (hvm/params.h): where the toolstack tells the hypervisor (and
    the guest) the frames and ports of its xenstore and console rings."""

    STORE_PFN = 1
    STORE_EVTCHN = 2
    CONSOLE_PFN = 17
    CONSOLE_EVTCHN = 18


class XenVer(IntEnum):
    version = 0
    extraversion = 1
    compile_info = 2
    capabilities = 3
    changeset = 4
    platform_parameters = 5
    get_features = 6
    pagesize = 7
    guest_handle = 8
    commandline = 9
    build_id = 10


class Errno(IntEnum):
    """Xen's errno values (errno.h): hypercalls return ``-value``."""

    EPERM = 1
    ENOENT = 2
    ESRCH = 3
    EIO = 5
    ENXIO = 6
    E2BIG = 7
    ENOEXEC = 8
    EBADF = 9
    ECHILD = 10
    EAGAIN = 11
    ENOMEM = 12
    EACCES = 13
    EFAULT = 14
    EBUSY = 16
    EEXIST = 17
    EXDEV = 18
    ENODEV = 19
    EINVAL = 22
    ENFILE = 23
    EMFILE = 24
    ENOSPC = 28
    EMLINK = 31
    EDOM = 33
    ERANGE = 34
    EDEADLK = 35
    ENAMETOOLONG = 36
    ENOLCK = 37
    ENOSYS = 38
    ENODATA = 61
    ETIME = 62
    EBADMSG = 74
    EOVERFLOW = 75
    EILSEQ = 84
    EUSERS = 87
    ENOTSOCK = 88
    EOPNOTSUPP = 95
    EADDRINUSE = 98
    EADDRNOTAVAIL = 99
    ENOBUFS = 105
    EISCONN = 106
    ENOTCONN = 107
    ETIMEDOUT = 110


class FlatSel(IntEnum):
    """Xen's flat segments in its reserved GDT area (xen-x86_32.h)."""

    RING1_CS = 0xE019
    RING1_DS = 0xE021
    RING1_SS = 0xE021
    RING3_CS = 0xE02B
    RING3_DS = 0xE033
    RING3_SS = 0xE033
    KERNEL_CS = 0xE019
    KERNEL_DS = 0xE021
    KERNEL_SS = 0xE021
    USER_CS = 0xE02B
    USER_DS = 0xE033
    USER_SS = 0xE033


class Sif(IntEnum):
    """``start_info.flags``."""

    PRIVILEGED = 1 << 0
    INITDOMAIN = 1 << 1
    MULTIBOOT_MOD = 1 << 2
    MOD_START_PFN = 1 << 3


class Misc(IntEnum):
    """Single constants, written with their Xen names."""

    XEN_LEGACY_MAX_VCPUS = 32
    MAX_GUEST_CMDLINE = 1024
    FIRST_RESERVED_GDT_PAGE = 14
    FIRST_RESERVED_GDT_ENTRY = 14 * 4096 // 8
    EVTCHN_2L_NR_CHANNELS = 4 * 4 * 64              # sizeof(xen_ulong_t)^2 * 64
    BIND_PIRQ__WILL_SHARE = 1
    CALLBACKF_mask_events = 1
    VCPU_SSHOTTMR_future = 1
    XENIRQSTAT_needs_eoi = 1
    XENIRQSTAT_shared = 2
    TI_DPL_MASK = 3                                 # trap_info.flags bits 0-1: DPL
    TI_IF = 4                                       # bit 2: mask events on entry (interrupt gate)
    HYPERCALL_VECTOR = HYPERCALL_VECTOR



# ---------------------------------------------------------------------------
# Structures (x86_32)
# ---------------------------------------------------------------------------

VCPU_TIME_INFO = Struct("vcpu_time_info", [
    Field("version", U32),
    Field("pad0", U32),
    Field("tsc_timestamp", U64, comment="TSC at last update of time vals"),
    Field("system_time", U64, comment="ns since boot"),
    Field("tsc_to_system_mul", U32),
    Field("tsc_shift", I8),
    Field("flags", U8),
    Field("pad1", U8, 2),
])

ARCH_VCPU_INFO = Struct("arch_vcpu_info", [
    Field("cr2", ULONG, comment="the faulting address of the last page fault"),
    Field("pad", ULONG, 5),
])

VCPU_INFO = Struct("vcpu_info", [
    Field("evtchn_upcall_pending", U8),
    Field("evtchn_upcall_mask", U8, comment="1: no upcalls (the virtual cli)"),
    Field("evtchn_pending_sel", XEN_ULONG, comment="a bit per evtchn_pending word"),
    Field("arch", ARCH_VCPU_INFO),
    Field("time", VCPU_TIME_INFO),
])

ARCH_SHARED_INFO = Struct("arch_shared_info", [
    Field("max_pfn", ULONG),
    Field("pfn_to_mfn_frame_list_list", XEN_PFN),
    Field("nmi_reason", ULONG),
    Field("p2m_cr3", ULONG),
    Field("p2m_vaddr", ULONG),
    Field("p2m_generation", ULONG),
    Field("wc_sec_hi", U32, comment="x86_32 only"),
])

SHARED_INFO = Struct("shared_info", [
    Field("vcpu_info", VCPU_INFO, Misc.XEN_LEGACY_MAX_VCPUS),
    Field("evtchn_pending", XEN_ULONG, 32, comment="a bit per port"),
    Field("evtchn_mask", XEN_ULONG, 32, comment="a bit per port: 1 = masked"),
    Field("wc_version", U32),
    Field("wc_sec", U32),
    Field("wc_nsec", U32),
    Field("arch", ARCH_SHARED_INFO),
], comment="the page at PV_SHARED_INFO_VA")

_CONSOLE_DOMU = Struct("", [Field("mfn", XEN_PFN), Field("evtchn", U32)], inline=True)
_CONSOLE_DOM0 = Struct("", [Field("info_off", U32), Field("info_size", U32)], inline=True)
_CONSOLE = Struct("", [Field("domU", _CONSOLE_DOMU), Field("dom0", _CONSOLE_DOM0)],
                  union=True, inline=True)

START_INFO = Struct("start_info", [
    Field("magic", CHAR, 32, comment='"xen-3.0-x86_32"'),
    Field("nr_pages", ULONG),
    Field("shared_info", ULONG, comment="MACHINE address of shared_info"),
    Field("flags", U32, comment="SIF_*"),
    Field("store_mfn", XEN_PFN),
    Field("store_evtchn", U32),
    Field("console", _CONSOLE),
    Field("pt_base", ULONG),
    Field("nr_pt_frames", ULONG),
    Field("mfn_list", ULONG),
    Field("mod_start", ULONG),
    Field("mod_len", ULONG),
    Field("cmd_line", I8, Misc.MAX_GUEST_CMDLINE),
    Field("first_p2m_pfn", ULONG),
    Field("nr_p2m_frames", ULONG),
], comment="the page at PV_START_INFO_VA (esi at entry)")

TRAP_INFO = Struct("trap_info", [
    Field("vector", U8),
    Field("flags", U8, comment="bits 0-1: DPL; bit 2 (TI_IF): mask events on entry"),
    Field("cs", U16),
    Field("address", ULONG, comment="0 ends the table"),
])

MMU_UPDATE = Struct("mmu_update", [
    Field("ptr", U64, comment="machine address of the PTE | MMU_*"),
    Field("val", U64),
])

_MMUEXT_ARG1 = Struct("", [Field("mfn", XEN_PFN), Field("linear_addr", ULONG)],
                      union=True, inline=True)
_MMUEXT_ARG2 = Struct("", [Field("nr_ents", UINT), Field("vcpumask", PTR),
                           Field("src_mfn", XEN_PFN)], union=True, inline=True)
MMUEXT_OP = Struct("mmuext_op", [
    Field("cmd", UINT, comment="MMUEXT_*"),
    Field("arg1", _MMUEXT_ARG1),
    Field("arg2", _MMUEXT_ARG2),
])

MULTICALL_ENTRY = Struct("multicall_entry", [
    Field("op", XEN_ULONG), Field("result", XEN_ULONG), Field("args", XEN_ULONG, 6)])

EVTCHN_ALLOC_UNBOUND = Struct("evtchn_alloc_unbound", [
    Field("dom", DOMID), Field("remote_dom", DOMID), Field("port", PORT, comment="out")])
EVTCHN_BIND_INTERDOMAIN = Struct("evtchn_bind_interdomain", [
    Field("remote_dom", DOMID), Field("remote_port", PORT),
    Field("local_port", PORT, comment="out")])
EVTCHN_BIND_VIRQ = Struct("evtchn_bind_virq", [
    Field("virq", U32), Field("vcpu", U32), Field("port", PORT, comment="out")])
EVTCHN_BIND_PIRQ = Struct("evtchn_bind_pirq", [
    Field("pirq", U32), Field("flags", U32, comment="BIND_PIRQ__*"),
    Field("port", PORT, comment="out")])
EVTCHN_BIND_IPI = Struct("evtchn_bind_ipi", [Field("vcpu", U32), Field("port", PORT)])
EVTCHN_CLOSE = Struct("evtchn_close", [Field("port", PORT)])
EVTCHN_SEND = Struct("evtchn_send", [Field("port", PORT)])
EVTCHN_UNMASK = Struct("evtchn_unmask", [Field("port", PORT)])
EVTCHN_BIND_VCPU = Struct("evtchn_bind_vcpu", [Field("port", PORT), Field("vcpu", U32)])
_STATUS_INTERDOMAIN = Struct("", [Field("dom", DOMID), Field("_pad", U16), Field("port", PORT)],
                             inline=True)
_STATUS_U = Struct("", [
    Field("unbound", Struct("", [Field("dom", DOMID)], inline=True)),
    Field("interdomain", _STATUS_INTERDOMAIN),
    Field("pirq", U32), Field("virq", U32),
], union=True, inline=True)
EVTCHN_STATUS = Struct("evtchn_status", [
    Field("dom", DOMID), Field("port", PORT),
    Field("status", U32, comment="out: EVTCHNSTAT_*"), Field("vcpu", U32, comment="out"),
    Field("u", _STATUS_U),
])

SCHED_SHUTDOWN = Struct("sched_shutdown", [Field("reason", UINT, comment="SHUTDOWN_*")])
SCHED_POLL = Struct("sched_poll", [
    Field("ports", PTR, comment="evtchn_port_t *"), Field("nr_ports", UINT),
    Field("timeout", U64)])
SCHED_REMOTE_SHUTDOWN = Struct("sched_remote_shutdown", [
    Field("domain_id", DOMID), Field("reason", UINT)])

XEN_CALLBACK = Struct("xen_callback", [Field("cs", ULONG), Field("eip", ULONG)])
CALLBACK_REGISTER = Struct("callback_register", [
    Field("type", U16, comment="CALLBACKTYPE_*"), Field("flags", U16, comment="CALLBACKF_*"),
    Field("address", XEN_CALLBACK)])
CALLBACK_UNREGISTER = Struct("callback_unregister", [Field("type", U16), Field("_unused", U16)])

VCPU_SET_PERIODIC_TIMER = Struct("vcpu_set_periodic_timer", [Field("period_ns", U64)])
VCPU_SET_SINGLESHOT_TIMER = Struct("vcpu_set_singleshot_timer", [
    Field("timeout_abs_ns", U64), Field("flags", U32)])
VCPU_RUNSTATE_INFO = Struct("vcpu_runstate_info", [
    Field("state", INT), Field("state_entry_time", U64), Field("time", U64, 4)])
VCPU_REGISTER_RUNSTATE_MEMORY_AREA = Struct("vcpu_register_runstate_memory_area", [
    Field("addr", U64, comment="the area's guest virtual address (the union's uint64_t p)")])
VCPU_REGISTER_VCPU_INFO = Struct("vcpu_register_vcpu_info", [
    Field("mfn", U64, comment="frame of the page (a gpfn: auto-translated)"),
    Field("offset", U32, comment="within the page; the slot must not cross it"),
    Field("rsvd", U32)])

PHYSDEV_EOI = Struct("physdev_eoi", [Field("irq", U32)])
PHYSDEV_IRQ_STATUS_QUERY = Struct("physdev_irq_status_query", [
    Field("irq", U32), Field("flags", U32, comment="out: XENIRQSTAT_*")])
PHYSDEV_SET_IOPL = Struct("physdev_set_iopl", [Field("iopl", U32)])

XEN_FEATURE_INFO = Struct("xen_feature_info", [Field("submap_idx", U32), Field("submap", U32)])
XEN_PLATFORM_PARAMETERS = Struct("xen_platform_parameters", [Field("virt_start", XEN_ULONG)])

XEN_HVM_PARAM = Struct("xen_hvm_param", [
    Field("domid", DOMID), Field("index", U32, comment="HVM_PARAM_*"), Field("value", U64)])

PV_IRET_FRAME = Struct("pv_iret_frame", [
    Field("eax", U32), Field("eip", U32), Field("cs", U32), Field("eflags", U32),
    Field("esp", U32, comment="only on a return to ring 3"),
    Field("ss", U32, comment="only on a return to ring 3"),
], comment="ringvisor's name for the stack frame of the x86_32 iret hypercall")

STRUCTS: tuple[Struct, ...] = (
    VCPU_TIME_INFO, ARCH_VCPU_INFO, VCPU_INFO, ARCH_SHARED_INFO, SHARED_INFO, START_INFO,
    TRAP_INFO, MMU_UPDATE, MMUEXT_OP, MULTICALL_ENTRY,
    EVTCHN_ALLOC_UNBOUND, EVTCHN_BIND_INTERDOMAIN, EVTCHN_BIND_VIRQ, EVTCHN_BIND_PIRQ,
    EVTCHN_BIND_IPI, EVTCHN_CLOSE, EVTCHN_SEND, EVTCHN_STATUS, EVTCHN_BIND_VCPU, EVTCHN_UNMASK,
    SCHED_SHUTDOWN, SCHED_POLL, SCHED_REMOTE_SHUTDOWN,
    XEN_CALLBACK, CALLBACK_REGISTER, CALLBACK_UNREGISTER,
    VCPU_SET_PERIODIC_TIMER, VCPU_SET_SINGLESHOT_TIMER, VCPU_RUNSTATE_INFO,
    VCPU_REGISTER_RUNSTATE_MEMORY_AREA, VCPU_REGISTER_VCPU_INFO,
    PHYSDEV_EOI, PHYSDEV_IRQ_STATUS_QUERY, PHYSDEV_SET_IOPL,
    XEN_FEATURE_INFO, XEN_PLATFORM_PARAMETERS, XEN_HVM_PARAM, PV_IRET_FRAME,
)

START_INFO_MAGIC = b"xen-3.0-x86_32"
# ringvisor's limit of vCPUs per domain (domctl max_vcpus, xl.cfg's vcpus): each has its
# vcpu_info slot in the shared-info page, of which there are XEN_LEGACY_MAX_VCPUS
RV_MAX_VCPUS = 8
# ---------------------------------------------------------------------------
# ringvisor's fixed guest virtual addresses (docs/paravirt.md): just below the
# hypervisor region (ringvisor.vmm.layout.MLIN), mapped in every address space
# of a PV guest, paging on or off.
# ---------------------------------------------------------------------------

PV_XENSTORE_VA = 0xFFBFB000            # the xenstore ring (a DomU of the hypervisor)
PV_CONSOLE_VA = 0xFFBFC000             # the console ring (a DomU of the hypervisor)
PV_BOOT_STACK_VA = 0xFFBFD000
PV_BOOT_STACK_TOP = 0xFFBFE000          # esp at entry
PV_START_INFO_VA = 0xFFBFE000           # read-only
PV_SHARED_INFO_VA = 0xFFBFF000          # read/write
# the vcpu_info[0] fields the pvcc rewrites touch, as absolute addresses
PV_UPCALL_PENDING_VA = PV_SHARED_INFO_VA + SHARED_INFO.offset("vcpu_info[0].evtchn_upcall_pending")
PV_UPCALL_MASK_VA = PV_SHARED_INFO_VA + SHARED_INFO.offset("vcpu_info[0].evtchn_upcall_mask")
PV_PENDING_SEL_VA = PV_SHARED_INFO_VA + SHARED_INFO.offset("vcpu_info[0].evtchn_pending_sel")
PV_CR2_VA = PV_SHARED_INFO_VA + SHARED_INFO.offset("vcpu_info[0].arch.cr2")
PV_EVTCHN_PENDING_VA = PV_SHARED_INFO_VA + SHARED_INFO.offset("evtchn_pending")
PV_EVTCHN_MASK_VA = PV_SHARED_INFO_VA + SHARED_INFO.offset("evtchn_mask")

FIXED_VAS = (
    ("PV_XENSTORE_VA", PV_XENSTORE_VA, "xenstore ring (start_info.store_mfn's page)"),
    ("PV_CONSOLE_VA", PV_CONSOLE_VA, "console ring (start_info.console.domU.mfn's page)"),
    ("PV_BOOT_STACK_VA", PV_BOOT_STACK_VA, "boot stack page"),
    ("PV_BOOT_STACK_TOP", PV_BOOT_STACK_TOP, "esp at entry"),
    ("PV_START_INFO_VA", PV_START_INFO_VA, "start_info (read-only)"),
    ("PV_SHARED_INFO_VA", PV_SHARED_INFO_VA, "shared_info (read/write)"),
    ("PV_UPCALL_PENDING_VA", PV_UPCALL_PENDING_VA, "vcpu_info[0].evtchn_upcall_pending"),
    ("PV_UPCALL_MASK_VA", PV_UPCALL_MASK_VA, "vcpu_info[0].evtchn_upcall_mask"),
    ("PV_PENDING_SEL_VA", PV_PENDING_SEL_VA, "vcpu_info[0].evtchn_pending_sel"),
    ("PV_CR2_VA", PV_CR2_VA, "vcpu_info[0].arch.cr2"),
    ("PV_EVTCHN_PENDING_VA", PV_EVTCHN_PENDING_VA, "shared_info.evtchn_pending"),
    ("PV_EVTCHN_MASK_VA", PV_EVTCHN_MASK_VA, "shared_info.evtchn_mask"),
)

# (enum, C prefix, title) in header order
CONSTANT_GROUPS: tuple[tuple[type[IntEnum], str, str], ...] = (
    (Hypercall, "__HYPERVISOR_", "hypercall numbers (xen.h; rv_machine_op: ringvisor)"),
    (RvMachineOp, "RV_", "rv_machine_op commands (ringvisor, docs/paravirt.md)"),
    (Mmu, "MMU_", "mmu_update commands, in ptr[1:0]"),
    (Mmuext, "MMUEXT_", "mmuext_op commands"),
    (Uvmf, "UVMF_", "update_va_mapping flags"),
    (ConsoleIO, "CONSOLEIO_", "console_io commands"),
    (VmAssistCmd, "VMASST_CMD_", "vm_assist commands"),
    (VmAssistType, "VMASST_TYPE_", "vm_assist types"),
    (DomId, "DOMID_", "reserved domain ids"),
    (Virq, "VIRQ_", "virtual IRQs"),
    (SchedOp, "SCHEDOP_", "sched_op commands (sched.h)"),
    (Shutdown, "SHUTDOWN_", "shutdown reasons"),
    (EvtchnOp, "EVTCHNOP_", "event_channel_op commands (event_channel.h)"),
    (EvtchnStat, "EVTCHNSTAT_", "evtchn_status.status"),
    (VcpuOp, "VCPUOP_", "vcpu_op commands (vcpu.h)"),
    (Runstate, "RUNSTATE_", "vcpu_runstate_info.state (vcpu.h)"),
    (CallbackType, "CALLBACKTYPE_", "callback types (callback.h)"),
    (CallbackOp, "CALLBACKOP_", "callback_op commands"),
    (PhysdevOp, "PHYSDEVOP_", "physdev_op commands (physdev.h)"),
    (HvmOp, "HVMOP_", "hvm_op commands (hvm/hvm_op.h)"),
    (HvmParam, "HVM_PARAM_", "hvm_op parameters (hvm/params.h)"),
    (XenVer, "XENVER_", "xen_version commands (version.h)"),
    (Errno, "XEN_", "errno values (errno.h): hypercalls return -XEN_E*"),
    (FlatSel, "FLAT_", "flat segments in Xen's reserved GDT area"),
    (Sif, "SIF_", "start_info.flags"),
    (Misc, "", "single constants"),
)


def pv_boot_context(entry: int, eax: int, ebx: int, cr3: int = 0) -> dict:
    """The ``vcpu_guest_context`` that starts a Multiboot PV kernel as ringvisor boots
    one (docs/paravirt.md, "Entry state"): at ``entry`` in ring 1 on Xen's flat
    segments, ``eax``/``ebx`` as Multiboot leaves them, ``esi`` = start_info's
    address, on the boot stack, events masked, virtual paging off."""
    return {"flags": 1 << 2 | 1 << 5,                     # VGCF_in_kernel | VGCF_online
            "user_regs": {"eax": eax, "ebx": ebx, "esi": PV_START_INFO_VA,
                          "esp": PV_BOOT_STACK_TOP, "eip": entry, "eflags": 0x2,
                          "cs": FlatSel.KERNEL_CS, "ss": FlatSel.KERNEL_SS,
                          "ds": FlatSel.KERNEL_DS, "es": FlatSel.KERNEL_DS,
                          "fs": FlatSel.KERNEL_DS, "gs": FlatSel.KERNEL_DS},
            "ctrlreg": [0x11, 0, 0, cr3, 0, 0, 0, 0]}          # PE | ET
