"""The management interface: domctl, sysctl and the XSM/FLASK operations.

What the toolstack in Domain 0 asks of the hypervisor (Xen's
``xen/include/public/domctl.h``, ``sysctl.h`` and ``xsm/flask_op.h``):
create, destroy, pause and inspect domains, set their memory and scheduler
parameters, read the physical machine's figures and the hypervisor's console,
load the security policy.  Only a privileged domain may issue them (the
hypervisor's security module decides, per operation and target).

The numbers and layouts are Xen's (``XEN_DOMCTL_INTERFACE_VERSION`` 0x10,
``XEN_SYSCTL_INTERFACE_VERSION`` 0x10).  Members that are 64-bit in these
interfaces are ``uint64_aligned_t`` (8-byte aligned even on x86_32) and guest
pointers are 64-bit handles, so the layouts differ from the guest ABI's.
"""

from __future__ import annotations

from enum import IntEnum

from .cstruct import (DOMID, HANDLE64, I64A, PTR, U8, U16, U32, U64A, Field, Struct)

DOMCTL_INTERFACE_VERSION = 0x00000010
SYSCTL_INTERFACE_VERSION = 0x00000010
FLASK_INTERFACE_VERSION = 1


class Domctl(IntEnum):
    """``XEN_DOMCTL_*`` (domctl.h)."""

    createdomain = 1
    destroydomain = 2
    pausedomain = 3
    unpausedomain = 4
    getdomaininfo = 5
    setvcpuaffinity = 9
    shadow_op = 10
    max_mem = 11
    setvcpucontext = 12
    getvcpucontext = 13
    getvcpuinfo = 14
    max_vcpus = 15
    scheduler_op = 16
    setdomainhandle = 17
    setdebugging = 18
    irq_permission = 19
    iomem_permission = 20
    ioport_permission = 21
    hypercall_init = 22
    settimeoffset = 24
    getvcpuaffinity = 25
    resumedomain = 27
    sendtrigger = 28
    subscribe = 29
    sethvmcontext = 33
    gethvmcontext = 34
    set_address_size = 35
    get_address_size = 36
    set_target = 46
    set_virq_handler = 66
    set_max_evtchn = 70
    soft_reset = 79
    set_gnttab_limits = 80


class Sysctl(IntEnum):
    """``XEN_SYSCTL_*`` (sysctl.h)."""

    readconsole = 1
    tbuf_op = 2
    physinfo = 3
    sched_id = 4
    perfc_op = 5
    getdomaininfolist = 6
    debug_keys = 7
    getcpuinfo = 8
    availheap = 9
    get_pmstat = 10
    cpu_hotplug = 11
    pm_op = 12
    page_offline_op = 14
    lockprof_op = 15
    cputopoinfo = 16
    numainfo = 17
    cpupool_op = 18
    scheduler_op = 19


class DomInfoFlag(IntEnum):
    """``XEN_DOMINF_*``: getdomaininfo's ``flags``; the shutdown reason sits in bits 16-23."""

    dying = 1 << 0
    hvm_guest = 1 << 1
    shutdown = 1 << 2
    paused = 1 << 3
    blocked = 1 << 4
    running = 1 << 5
    debugged = 1 << 6
    xs_domain = 1 << 7
    hap = 1 << 8
    shutdownshift = 16
    shutdownmask = 255


class CreateFlag(IntEnum):
    """``XEN_DOMCTL_CDF_*``: createdomain's ``flags``."""

    hvm_guest = 1 << 0
    hap = 1 << 1
    s3_integrity = 1 << 2
    oos_off = 1 << 3
    xs_domain = 1 << 4


class Scheduler(IntEnum):
    """``XEN_SCHEDULER_*``; and ``XEN_DOMCTL_SCHEDOP_*`` below."""

    credit = 5
    credit2 = 6
    arinc653 = 7
    rtds = 8
    null = 9


class SchedCmd(IntEnum):
    putinfo = 0
    getinfo = 1
    putvcpuinfo = 2
    getvcpuinfo = 3


class VcpuAffinity(IntEnum):
    """``XEN_VCPUAFFINITY_*``: set/getvcpuaffinity's ``flags``."""

    hard = 1 << 0
    soft = 1 << 1
    force = 1 << 2


class PhysCap(IntEnum):
    """``XEN_SYSCTL_PHYSCAP_*``."""

    hvm = 1 << 0
    hvm_directio = 1 << 1


class FlaskOp(IntEnum):
    """``FLASK_*`` commands of the ``xsm_op`` hypercall (xsm/flask_op.h)."""

    load = 1
    getenforce = 2
    setenforce = 3
    context_to_sid = 4
    sid_to_context = 5
    access = 6
    create = 7
    relabel = 8
    user = 9
    policyvers = 10
    getbool = 11
    setbool = 12
    commitbools = 13
    mls = 14
    disable = 15
    getavc_threshold = 16
    setavc_threshold = 17
    avc_hashstats = 18
    avc_cachestats = 19
    member = 20
    add_ocontext = 21
    del_ocontext = 22
    get_peer_sid = 23
    relabel_domain = 24


# ---------------------------------------------------------------------------
# domctl
# ---------------------------------------------------------------------------

HANDLE = Field("handle", U8, 16, comment="xen_domain_handle_t: the domain's UUID")
ARCH_DOMAINCONFIG = Struct("xen_arch_domainconfig", [Field("emulation_flags", U32)])

DOMCTL_CREATEDOMAIN = Struct("xen_domctl_createdomain", [
    Field("ssidref", U32), HANDLE, Field("flags", U32, comment="XEN_DOMCTL_CDF_*"),
    Field("config", ARCH_DOMAINCONFIG)])

DOMCTL_GETDOMAININFO = Struct("xen_domctl_getdomaininfo", [
    Field("domain", DOMID),
    Field("flags", U32, comment="XEN_DOMINF_*"),
    Field("tot_pages", U64A), Field("max_pages", U64A), Field("outstanding_pages", U64A),
    Field("shr_pages", U64A), Field("paged_pages", U64A),
    Field("shared_info_frame", U64A, comment="GMFN of shared_info"),
    Field("cpu_time", U64A, comment="ns"),
    Field("nr_online_vcpus", U32), Field("max_vcpu_id", U32), Field("ssidref", U32),
    HANDLE, Field("cpupool", U32), Field("arch_config", ARCH_DOMAINCONFIG)])

DOMCTL_MAX_MEM = Struct("xen_domctl_max_mem", [Field("max_memkb", U64A)])
DOMCTL_VCPUCONTEXT = Struct("xen_domctl_vcpucontext", [
    Field("vcpu", U32), Field("ctxt", HANDLE64, comment="vcpu_guest_context_t *")])
DOMCTL_GETVCPUINFO = Struct("xen_domctl_getvcpuinfo", [
    Field("vcpu", U32), Field("online", U8), Field("blocked", U8), Field("running", U8),
    Field("cpu_time", U64A, comment="ns"), Field("cpu", U32)])
DOMCTL_MAX_VCPUS = Struct("xen_domctl_max_vcpus", [Field("max", U32)])
XENCTL_BITMAP = Struct("xenctl_bitmap", [
    Field("bitmap", HANDLE64, comment="uint8_t *"), Field("nr_bits", U32)])
DOMCTL_VCPUAFFINITY = Struct("xen_domctl_vcpuaffinity", [
    Field("vcpu", U32), Field("flags", U32, comment="XEN_VCPUAFFINITY_*"),
    Field("cpumap_hard", XENCTL_BITMAP), Field("cpumap_soft", XENCTL_BITMAP)])
SCHED_CREDIT = Struct("xen_domctl_sched_credit", [Field("weight", U16), Field("cap", U16)])
_SCHED_U = Struct("", [Field("credit", SCHED_CREDIT), Field("_pad", U64A, 2)],
                  union=True, inline=True)
DOMCTL_SCHEDULER_OP = Struct("xen_domctl_scheduler_op", [
    Field("sched_id", U32, comment="XEN_SCHEDULER_*"), Field("cmd", U32, comment="XEN_DOMCTL_SCHEDOP_*"),
    Field("u", _SCHED_U)])
DOMCTL_SETDOMAINHANDLE = Struct("xen_domctl_setdomainhandle", [HANDLE])
DOMCTL_SETTIMEOFFSET = Struct("xen_domctl_settimeoffset", [Field("time_offset_seconds", I64A)])
# get/sethvmcontext: a paused domain's context records (ringvisor's: hypervisor/domsave.py);
# a null buffer asks for the size
DOMCTL_HVMCONTEXT = Struct("xen_domctl_hvmcontext", [
    Field("size", U32, comment="in: the buffer's; out: the context's"),
    Field("buffer", HANDLE64, comment="uint8_t *")])

_DOMCTL_U = Struct("", [
    Field("createdomain", DOMCTL_CREATEDOMAIN),
    Field("getdomaininfo", DOMCTL_GETDOMAININFO),
    Field("max_mem", DOMCTL_MAX_MEM),
    Field("vcpucontext", DOMCTL_VCPUCONTEXT),
    Field("getvcpuinfo", DOMCTL_GETVCPUINFO),
    Field("max_vcpus", DOMCTL_MAX_VCPUS),
    Field("vcpuaffinity", DOMCTL_VCPUAFFINITY),
    Field("scheduler_op", DOMCTL_SCHEDULER_OP),
    Field("setdomainhandle", DOMCTL_SETDOMAINHANDLE),
    Field("settimeoffset", DOMCTL_SETTIMEOFFSET),
    Field("hvmcontext", DOMCTL_HVMCONTEXT),
    Field("pad", U8, 128),
], union=True, inline=True)

DOMCTL = Struct("xen_domctl", [
    Field("cmd", U32, comment="XEN_DOMCTL_*"),
    Field("interface_version", U32, comment="XEN_DOMCTL_INTERFACE_VERSION"),
    Field("domain", DOMID),
    Field("u", _DOMCTL_U),
], comment="the argument of the domctl hypercall (36)")

# x86_32 vcpu_guest_context (arch-x86/xen-x86_32.h, arch-x86/xen.h): what
# set/getvcpucontext carry.
CPU_USER_REGS = Struct("cpu_user_regs", [
    Field("ebx", U32), Field("ecx", U32), Field("edx", U32), Field("esi", U32),
    Field("edi", U32), Field("ebp", U32), Field("eax", U32),
    Field("error_code", U16), Field("entry_vector", U16),
    Field("eip", U32), Field("cs", U16), Field("saved_upcall_mask", U8), Field("_pad0", U8),
    Field("eflags", U32), Field("esp", U32), Field("ss", U16), Field("_pad1", U16),
    Field("es", U16), Field("_pad2", U16), Field("ds", U16), Field("_pad3", U16),
    Field("fs", U16), Field("_pad4", U16), Field("gs", U16), Field("_pad5", U16)])

_TRAP_INFO = Struct("", [Field("vector", U8), Field("flags", U8), Field("cs", U16),
                         Field("address", U32)], inline=True)
VCPU_GUEST_CONTEXT = Struct("vcpu_guest_context", [
    Field("fpu_ctxt", U8, 512, comment="FXSAVE image"),
    Field("flags", U32, comment="VGCF_*"),
    Field("user_regs", CPU_USER_REGS),
    Field("trap_ctxt", _TRAP_INFO, 256),
    Field("ldt_base", U32), Field("ldt_ents", U32),
    Field("gdt_frames", U32, 16), Field("gdt_ents", U32),
    Field("kernel_ss", U32), Field("kernel_sp", U32),
    Field("ctrlreg", U32, 8), Field("debugreg", U32, 8),
    Field("event_callback_cs", U32), Field("event_callback_eip", U32),
    Field("failsafe_callback_cs", U32), Field("failsafe_callback_eip", U32),
    Field("vm_assist", U32)])


class Vgcf(IntEnum):
    """``VGCF_*``: vcpu_guest_context.flags."""

    i387_valid = 1 << 0
    in_kernel = 1 << 2
    failsafe_disables_events = 1 << 3
    syscall_disables_events = 1 << 4
    online = 1 << 5


# ---------------------------------------------------------------------------
# sysctl
# ---------------------------------------------------------------------------

SYSCTL_READCONSOLE = Struct("xen_sysctl_readconsole", [
    Field("clear", U8), Field("incremental", U8), Field("pad0", U8), Field("pad1", U8),
    Field("index", U32, comment="in: start (incremental); out: next"),
    Field("buffer", HANDLE64, comment="char *"), Field("count", U32, comment="in: size; out: bytes")])
SYSCTL_PHYSINFO = Struct("xen_sysctl_physinfo", [
    Field("threads_per_core", U32), Field("cores_per_socket", U32), Field("nr_cpus", U32),
    Field("max_cpu_id", U32), Field("nr_nodes", U32), Field("max_node_id", U32),
    Field("cpu_khz", U32), Field("capabilities", U32, comment="XEN_SYSCTL_PHYSCAP_*"),
    Field("total_pages", U64A), Field("free_pages", U64A), Field("scrub_pages", U64A),
    Field("outstanding_pages", U64A), Field("max_mfn", U64A), Field("hw_cap", U32, 8)])
SYSCTL_SCHED_ID = Struct("xen_sysctl_sched_id", [Field("sched_id", U32)])
SYSCTL_GETDOMAININFOLIST = Struct("xen_sysctl_getdomaininfolist", [
    Field("first_domain", DOMID), Field("max_domains", U32),
    Field("buffer", HANDLE64, comment="xen_domctl_getdomaininfo_t *"),
    Field("num_domains", U32, comment="out")])

_SYSCTL_U = Struct("", [
    Field("readconsole", SYSCTL_READCONSOLE),
    Field("physinfo", SYSCTL_PHYSINFO),
    Field("sched_id", SYSCTL_SCHED_ID),
    Field("getdomaininfolist", SYSCTL_GETDOMAININFOLIST),
    Field("pad", U8, 128),
], union=True, inline=True)

SYSCTL = Struct("xen_sysctl", [
    Field("cmd", U32, comment="XEN_SYSCTL_*"),
    Field("interface_version", U32, comment="XEN_SYSCTL_INTERFACE_VERSION"),
    Field("u", _SYSCTL_U),
], comment="the argument of the sysctl hypercall (35)")

# ---------------------------------------------------------------------------
# XSM / FLASK
# ---------------------------------------------------------------------------

FLASK_LOAD = Struct("xen_flask_load", [Field("buffer", PTR, comment="char *"), Field("size", U32)])
FLASK_SETENFORCE = Struct("xen_flask_setenforce", [Field("enforcing", U32)])
FLASK_SID_CONTEXT = Struct("xen_flask_sid_context", [
    Field("sid", U32, comment="in/out"), Field("size", U32),
    Field("context", PTR, comment="char *")])
FLASK_ACCESS = Struct("xen_flask_access", [
    Field("ssid", U32), Field("tsid", U32), Field("tclass", U16), Field("req", U32),
    Field("allowed", U32, comment="out"), Field("audit_allow", U32), Field("audit_deny", U32),
    Field("seqno", U32)])
_FLASK_U = Struct("", [
    Field("load", FLASK_LOAD), Field("enforce", FLASK_SETENFORCE),
    Field("sid_context", FLASK_SID_CONTEXT), Field("access", FLASK_ACCESS),
], union=True, inline=True)
FLASK_OP = Struct("xen_flask_op", [
    Field("cmd", U32, comment="FLASK_*"), Field("interface_version", U32),
    Field("u", _FLASK_U)], comment="the argument of the xsm_op hypercall (27)")

# a domain's security label, as a name (what sid_to_context returns)
CONTEXT_MAX = 256

STRUCTS: tuple[Struct, ...] = (
    ARCH_DOMAINCONFIG, DOMCTL_CREATEDOMAIN, DOMCTL_GETDOMAININFO, DOMCTL_MAX_MEM,
    DOMCTL_VCPUCONTEXT, DOMCTL_GETVCPUINFO, DOMCTL_MAX_VCPUS, XENCTL_BITMAP, DOMCTL_VCPUAFFINITY,
    SCHED_CREDIT, DOMCTL_SCHEDULER_OP,
    DOMCTL_SETDOMAINHANDLE, DOMCTL_SETTIMEOFFSET, DOMCTL_HVMCONTEXT, DOMCTL, CPU_USER_REGS, VCPU_GUEST_CONTEXT,
    SYSCTL_READCONSOLE, SYSCTL_PHYSINFO, SYSCTL_SCHED_ID, SYSCTL_GETDOMAININFOLIST, SYSCTL,
    FLASK_LOAD, FLASK_SETENFORCE, FLASK_SID_CONTEXT, FLASK_ACCESS, FLASK_OP,
)

CONSTANT_GROUPS = (
    (Domctl, "XEN_DOMCTL_", "domctl commands (domctl.h)"),
    (Sysctl, "XEN_SYSCTL_", "sysctl commands (sysctl.h)"),
    (DomInfoFlag, "XEN_DOMINF_", "getdomaininfo flags"),
    (CreateFlag, "XEN_DOMCTL_CDF_", "createdomain flags"),
    (Scheduler, "XEN_SCHEDULER_", "scheduler ids"),
    (SchedCmd, "XEN_DOMCTL_SCHEDOP_", "scheduler_op commands"),
    (VcpuAffinity, "XEN_VCPUAFFINITY_", "set/getvcpuaffinity flags"),
    (PhysCap, "XEN_SYSCTL_PHYSCAP_", "physinfo capabilities"),
    (Vgcf, "VGCF_", "vcpu_guest_context flags"),
    (FlaskOp, "FLASK_", "xsm_op (FLASK) commands (xsm/flask_op.h)"),
)

SINGLE_CONSTANTS = (
    ("XEN_DOMCTL_INTERFACE_VERSION", DOMCTL_INTERFACE_VERSION),
    ("XEN_SYSCTL_INTERFACE_VERSION", SYSCTL_INTERFACE_VERSION),
    ("XEN_FLASK_INTERFACE_VERSION", FLASK_INTERFACE_VERSION),
)
