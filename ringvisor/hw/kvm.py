"""The host's real processor through Linux KVM: ``/dev/kvm`` and its ioctl API.

This is hardware too -- the host's CPU, with its virtualization extensions,
driven through the kernel's interface (``Documentation/virt/kvm/api.rst``).
The structures below are those of ``<linux/kvm.h>`` for x86, laid out with
ctypes; the ioctl numbers are computed from them as ``_IOW``/``_IOR`` do, so a
size mismatch would show as ``ENOTTY`` rather than as silent corruption.

Three file descriptors, as in the API: the system (``/dev/kvm``), a VM
(``KVM_CREATE_VM``: memory slots, the TSS for real mode on VMX) and a vCPU
(``KVM_CREATE_VCPU``: registers, ``KVM_RUN`` and the shared ``kvm_run`` page
it reports exits in).  There is no in-kernel interrupt controller: the PC's
8259A pair stays in the host process and interrupts go in with
``KVM_INTERRUPT`` when the vCPU says it can take one -- QEMU's
``kernel_irqchip=off``.

ioctls are made through libc with ctypes rather than ``fcntl.ioctl``: the GIL
is released during ``KVM_RUN`` and an interrupted run comes back as ``EINTR``
(the timer's kick) instead of an exception raised at an arbitrary point.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
from ctypes import c_uint8 as u8, c_uint16 as u16, c_uint32 as u32, c_uint64 as u64

KVM_PATH = "/dev/kvm"
KVM_API_VERSION = 12


class KvmError(OSError):
    """A KVM operation failed (or KVM is not usable here)."""


# -- structures of <linux/kvm.h> (x86) ------------------------------------------------------
class kvm_regs(ctypes.Structure):
    _fields_ = [(n, u64) for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
                                   "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
                                   "rip", "rflags")]


class kvm_segment(ctypes.Structure):
    _fields_ = [("base", u64), ("limit", u32), ("selector", u16), ("type", u8),
                ("present", u8), ("dpl", u8), ("db", u8), ("s", u8), ("l", u8), ("g", u8),
                ("avl", u8), ("unusable", u8), ("padding", u8)]


class kvm_dtable(ctypes.Structure):
    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


SREGS_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")


class kvm_sregs(ctypes.Structure):
    _fields_ = [(n, kvm_segment) for n in SREGS_SEGMENTS] + [
        ("gdt", kvm_dtable), ("idt", kvm_dtable),
        ("cr0", u64), ("cr2", u64), ("cr3", u64), ("cr4", u64), ("cr8", u64),
        ("efer", u64), ("apic_base", u64), ("interrupt_bitmap", u64 * 4)]


class kvm_sregs2(ctypes.Structure):
    """kvm_sregs without the interrupt bitmap, with the PAE PDPTE registers (KVM_CAP_SREGS2)."""
    _fields_ = kvm_sregs._fields_[:-1] + [("flags", u64), ("pdptrs", u64 * 4)]


class kvm_fpu(ctypes.Structure):
    _fields_ = [("fpr", (u8 * 16) * 8), ("fcw", u16), ("fsw", u16), ("ftwx", u8),
                ("pad1", u8), ("last_opcode", u16), ("last_ip", u64), ("last_dp", u64),
                ("xmm", (u8 * 16) * 16), ("mxcsr", u32), ("pad2", u32)]


class kvm_xsave(ctypes.Structure):
    """The XSAVE area; its first 512 bytes are the FXSAVE layout (MXCSR at byte 24) and
    XSTATE_BV is at byte 512 (SDM Vol. 1 §13.4)."""
    _fields_ = [("region", u32 * 1024)]


XSAVE_MXCSR, XSAVE_XSTATE_BV, XSTATE_SSE, XSAVE_XMM = 6, 128, 0x2, 160


class kvm_debugregs(ctypes.Structure):
    _fields_ = [("db", u64 * 4), ("dr6", u64), ("dr7", u64), ("flags", u64),
                ("reserved", u64 * 9)]


class _exception(ctypes.Structure):
    _fields_ = [("injected", u8), ("nr", u8), ("has_error_code", u8), ("pending", u8),
                ("error_code", u32)]


class _interrupt(ctypes.Structure):
    _fields_ = [("injected", u8), ("nr", u8), ("soft", u8), ("shadow", u8)]


class _nmi(ctypes.Structure):
    _fields_ = [("injected", u8), ("pending", u8), ("masked", u8), ("pad", u8)]


class _smi(ctypes.Structure):
    _fields_ = [("smm", u8), ("pending", u8), ("smm_inside_nmi", u8), ("latched_init", u8)]


class kvm_vcpu_events(ctypes.Structure):
    _fields_ = [("exception", _exception), ("interrupt", _interrupt), ("nmi", _nmi),
                ("sipi_vector", u32), ("flags", u32), ("smi", _smi),
                ("triple_fault_pending", u8), ("reserved", u8 * 26),
                ("exception_has_payload", u8), ("exception_payload", u64)]


class kvm_guest_debug(ctypes.Structure):
    """KVM_SET_GUEST_DEBUG's argument: ``control`` (KVM_GUESTDBG_*), then x86's
    ``kvm_guest_debug_arch``: DR0-DR7 as the debugger wants the hardware's (DR4-DR6
    unused) while the guest runs."""
    _fields_ = [("control", u32), ("pad", u32), ("debugreg", u64 * 8)]


class kvm_userspace_memory_region(ctypes.Structure):
    _fields_ = [("slot", u32), ("flags", u32), ("guest_phys_addr", u64),
                ("memory_size", u64), ("userspace_addr", u64)]


class kvm_dirty_log(ctypes.Structure):
    _fields_ = [("slot", u32), ("padding1", u32), ("dirty_bitmap", u64)]


class kvm_interrupt(ctypes.Structure):
    _fields_ = [("irq", u32)]


class kvm_cpuid_entry2(ctypes.Structure):
    _fields_ = [("function", u32), ("index", u32), ("flags", u32), ("eax", u32),
                ("ebx", u32), ("ecx", u32), ("edx", u32), ("padding", u32 * 3)]


class kvm_cpuid2_header(ctypes.Structure):
    _fields_ = [("nent", u32), ("padding", u32)]


class kvm_msr_entry(ctypes.Structure):
    _fields_ = [("index", u32), ("reserved", u32), ("data", u64)]


class kvm_msrs_header(ctypes.Structure):
    _fields_ = [("nmsrs", u32), ("pad", u32)]


class kvm_signal_mask_header(ctypes.Structure):
    _fields_ = [("len", u32)]


# the kvm_run page: the fixed head, then the exit's union at offset 32
class _io(ctypes.Structure):
    _fields_ = [("direction", u8), ("size", u8), ("port", u16), ("count", u32),
                ("data_offset", u64)]


class _mmio(ctypes.Structure):
    _fields_ = [("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8)]


class _fail_entry(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class _internal(ctypes.Structure):
    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class kvm_debug_exit_arch(ctypes.Structure):
    _fields_ = [("exception", u32), ("pad", u32), ("pc", u64), ("dr6", u64), ("dr7", u64)]


class _exit(ctypes.Union):
    _fields_ = [("io", _io), ("mmio", _mmio), ("fail_entry", _fail_entry),
                ("internal", _internal), ("debug", kvm_debug_exit_arch), ("padding", u8 * 256)]


class kvm_run(ctypes.Structure):
    _fields_ = [("request_interrupt_window", u8), ("immediate_exit", u8), ("padding1", u8 * 6),
                ("exit_reason", u32), ("ready_for_interrupt_injection", u8), ("if_flag", u8),
                ("flags", u16), ("cr8", u64), ("apic_base", u64), ("exit", _exit)]


# -- ioctl numbers (asm-generic/ioctl.h) ---------------------------------------------------------
_KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return direction << 30 | size << 16 | _KVMIO << 8 | nr


def _io_(nr): return _ioc(0, nr, 0)
def _iow(nr, t): return _ioc(1, nr, ctypes.sizeof(t))
def _ior(nr, t): return _ioc(2, nr, ctypes.sizeof(t))
def _iowr(nr, t): return _ioc(3, nr, ctypes.sizeof(t))


KVM_GET_API_VERSION = _io_(0x00)
KVM_CREATE_VM = _io_(0x01)
KVM_CHECK_EXTENSION = _io_(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io_(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, kvm_cpuid2_header)
KVM_CREATE_VCPU = _io_(0x41)
KVM_GET_DIRTY_LOG = _iow(0x42, kvm_dirty_log)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, kvm_userspace_memory_region)
KVM_SET_TSS_ADDR = _io_(0x47)
KVM_SET_IDENTITY_MAP_ADDR = _iow(0x48, u64)
KVM_RUN = _io_(0x80)
KVM_GET_REGS = _ior(0x81, kvm_regs)
KVM_SET_REGS = _iow(0x82, kvm_regs)
KVM_GET_SREGS = _ior(0x83, kvm_sregs)
KVM_SET_SREGS = _iow(0x84, kvm_sregs)
KVM_GET_SREGS2 = _ior(0xCC, kvm_sregs2)
KVM_SET_SREGS2 = _iow(0xCD, kvm_sregs2)
KVM_SREGS2_FLAGS_PDPTRS_VALID = 1
KVM_INTERRUPT = _iow(0x86, kvm_interrupt)
KVM_GET_MSRS = _iowr(0x88, kvm_msrs_header)
KVM_SET_MSRS = _iow(0x89, kvm_msrs_header)
KVM_SET_SIGNAL_MASK = _iow(0x8B, kvm_signal_mask_header)
KVM_GET_FPU = _ior(0x8C, kvm_fpu)
KVM_SET_FPU = _iow(0x8D, kvm_fpu)
KVM_SET_CPUID2 = _iow(0x90, kvm_cpuid2_header)
KVM_GET_VCPU_EVENTS = _ior(0x9F, kvm_vcpu_events)
KVM_SET_VCPU_EVENTS = _iow(0xA0, kvm_vcpu_events)
KVM_GET_TSC_KHZ = _io_(0xA3)
KVM_GET_XSAVE = _ior(0xA4, kvm_xsave)
KVM_SET_XSAVE = _iow(0xA5, kvm_xsave)
KVM_SET_GUEST_DEBUG = _iow(0x9B, kvm_guest_debug)
KVM_GET_DEBUGREGS = _ior(0xA1, kvm_debugregs)
KVM_SET_DEBUGREGS = _iow(0xA2, kvm_debugregs)

KVM_CAP_USER_MEMORY, KVM_CAP_SET_TSS_ADDR, KVM_CAP_VCPU_EVENTS = 3, 4, 41
KVM_CAP_SET_IDENTITY_MAP_ADDR, KVM_CAP_DEBUGREGS, KVM_CAP_XSAVE = 37, 50, 55
KVM_CAP_SET_GUEST_DEBUG = 23
KVM_CAP_SREGS2 = 200
# KVM_SET_GUEST_DEBUG's control (<linux/kvm.h>, x86's <asm/kvm.h>)
GUESTDBG_ENABLE, GUESTDBG_SINGLESTEP = 0x1, 0x2
GUESTDBG_USE_SW_BP, GUESTDBG_USE_HW_BP = 0x10000, 0x20000
GUESTDBG_INJECT_DB, GUESTDBG_INJECT_BP = 0x40000, 0x80000
DB_VECTOR, BP_VECTOR = 1, 3
KVM_MEM_LOG_DIRTY_PAGES = 1
KVM_VCPUEVENT_VALID_SHADOW = 0x4

# exit reasons (kvm_run.exit_reason)
EXIT_NAMES = {0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT",
              6: "MMIO", 7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR",
              17: "INTERNAL_ERROR", 24: "SYSTEM_EVENT"}
EXIT_IO, EXIT_DEBUG, EXIT_HLT, EXIT_MMIO, EXIT_IRQ_WINDOW_OPEN = 2, 4, 5, 6, 7
EXIT_SHUTDOWN, EXIT_FAIL_ENTRY, EXIT_INTR, EXIT_INTERNAL_ERROR = 8, 9, 10, 17
EXIT_IO_IN, EXIT_IO_OUT = 0, 1

# Where real mode's helpers live on VMX without unrestricted guest (QEMU's addresses,
# target/i386/kvm/kvm.c): three pages of TSS and the identity-mapped page table, in
# the hole below the BIOS flash, which no RAM slot covers.
TSS_ADDR = 0xFEFFD000
IDENTITY_MAP_ADDR = 0xFEFFC000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc.ioctl.restype = ctypes.c_int


def ioctl(fd: int, request: int, arg=None, what: str = "") -> int:
    """One ioctl; ``arg`` an int or a ctypes object (passed by address).  EINTR is
    returned as ``-EINTR`` (a run the timer interrupted); other errors raise."""
    if arg is None or isinstance(arg, int):
        ptr = ctypes.c_void_p(arg or 0)
    else:
        ptr = ctypes.cast(ctypes.pointer(arg), ctypes.c_void_p)
    r = _libc.ioctl(fd, request, ptr)
    if r < 0:
        e = ctypes.get_errno()
        if e == errno.EINTR:
            return -errno.EINTR
        raise KvmError(e, f"{what or hex(request)}: {os.strerror(e)}")
    return r


def unusable_reason() -> str | None:
    """Why KVM cannot be used here (one line), or None if it can."""
    try:
        fd = os.open(KVM_PATH, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{KVM_PATH} is absent (no KVM on this host)"
    except OSError as e:
        return f"{KVM_PATH}: {e.strerror}"
    try:
        version = ioctl(fd, KVM_GET_API_VERSION, None, "KVM_GET_API_VERSION")
        if version != KVM_API_VERSION:
            return f"{KVM_PATH} speaks API version {version}, not {KVM_API_VERSION}"
        if not ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY):
            return f"{KVM_PATH} lacks user memory slots"
        vm = ioctl(fd, KVM_CREATE_VM, 0, "KVM_CREATE_VM")
        os.close(vm)
    except KvmError as e:
        return f"{KVM_PATH}: {e.strerror}"
    finally:
        os.close(fd)
    return None


class KvmSystem:
    """``/dev/kvm`` itself."""

    def __init__(self) -> None:
        reason = unusable_reason()
        if reason is not None:
            raise KvmError(errno.ENODEV, reason)
        self.fd = os.open(KVM_PATH, os.O_RDWR | os.O_CLOEXEC)
        self.vcpu_mmap_size = ioctl(self.fd, KVM_GET_VCPU_MMAP_SIZE, None, "KVM_GET_VCPU_MMAP_SIZE")

    def has(self, cap: int) -> int:
        return ioctl(self.fd, KVM_CHECK_EXTENSION, cap)

    def supported_cpuid(self) -> dict[tuple[int, int], kvm_cpuid_entry2]:
        """KVM_GET_SUPPORTED_CPUID: what this host can give a guest, per (leaf, subleaf)."""
        n = 256
        buf = _cpuid2(n)
        buf.nent = n
        ioctl(self.fd, KVM_GET_SUPPORTED_CPUID, buf, "KVM_GET_SUPPORTED_CPUID")
        return {(e.function, e.index): e for e in buf.entries[:buf.nent]}

    def close(self) -> None:
        os.close(self.fd)


def _cpuid2(n: int):
    class kvm_cpuid2(ctypes.Structure):
        _fields_ = [("nent", u32), ("padding", u32), ("entries", kvm_cpuid_entry2 * n)]
    return kvm_cpuid2()


class KvmVm:
    """A VM: its memory slots and its one vCPU."""

    def __init__(self, system: KvmSystem) -> None:
        self.system = system
        self.fd = ioctl(system.fd, KVM_CREATE_VM, 0, "KVM_CREATE_VM")
        self.slots: dict[int, kvm_userspace_memory_region] = {}
        if system.has(KVM_CAP_SET_TSS_ADDR):
            ioctl(self.fd, KVM_SET_TSS_ADDR, TSS_ADDR, "KVM_SET_TSS_ADDR")
        if system.has(KVM_CAP_SET_IDENTITY_MAP_ADDR):
            ioctl(self.fd, KVM_SET_IDENTITY_MAP_ADDR, u64(IDENTITY_MAP_ADDR),
                  "KVM_SET_IDENTITY_MAP_ADDR")

    def map_memory(self, slot: int, guest_phys: int, buffer: mmap.mmap, log_dirty: bool = False) -> None:
        """Back guest-physical ``guest_phys..+len(buffer)`` with ``buffer`` (page aligned:
        an anonymous mmap), optionally logging writes to it."""
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
        region = kvm_userspace_memory_region(slot, KVM_MEM_LOG_DIRTY_PAGES if log_dirty else 0,
                                             guest_phys, len(buffer), addr)
        ioctl(self.fd, KVM_SET_USER_MEMORY_REGION, region, "KVM_SET_USER_MEMORY_REGION")
        self.slots[slot] = region

    def log_dirty(self, slot: int, on: bool) -> None:
        r = self.slots[slot]
        r.flags = KVM_MEM_LOG_DIRTY_PAGES if on else 0
        ioctl(self.fd, KVM_SET_USER_MEMORY_REGION, r, "KVM_SET_USER_MEMORY_REGION")

    def dirty_pages(self, slot: int) -> set[int]:
        """KVM_GET_DIRTY_LOG: the pages of ``slot`` written since the last call (page
        numbers from the slot's guest-physical base), and the log is cleared."""
        r = self.slots[slot]
        pages = r.memory_size >> 12
        bitmap = (u64 * ((pages + 63) // 64))()
        ioctl(self.fd, KVM_GET_DIRTY_LOG, kvm_dirty_log(slot, 0, ctypes.addressof(bitmap)),
              "KVM_GET_DIRTY_LOG")
        base = r.guest_phys_addr >> 12
        out = set()
        for i, word in enumerate(bitmap):
            while word:
                low = word & -word
                out.add(base + i * 64 + low.bit_length() - 1)
                word ^= low
        return out

    def close(self) -> None:
        os.close(self.fd)


class KvmVcpu:
    """A vCPU: its registers, ``KVM_RUN``, and the ``kvm_run`` page."""

    def __init__(self, vm: KvmVm, index: int = 0) -> None:
        self.vm = vm
        self.fd = ioctl(vm.fd, KVM_CREATE_VCPU, index, "KVM_CREATE_VCPU")
        self._page = mmap.mmap(self.fd, vm.system.vcpu_mmap_size, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE)
        self.run_page = kvm_run.from_buffer(self._page)
        # the page's I/O data buffer, addressed by exit.io.data_offset
        self.page = memoryview(self._page)

    def get(self, request: int, struct, what: str):
        ioctl(self.fd, request, struct, what)
        return struct

    def regs(self) -> kvm_regs:
        return self.get(KVM_GET_REGS, kvm_regs(), "KVM_GET_REGS")

    def set_regs(self, r: kvm_regs) -> None:
        ioctl(self.fd, KVM_SET_REGS, r, "KVM_SET_REGS")

    def sregs(self) -> kvm_sregs:
        return self.get(KVM_GET_SREGS, kvm_sregs(), "KVM_GET_SREGS")

    def set_sregs(self, s: kvm_sregs) -> None:
        ioctl(self.fd, KVM_SET_SREGS, s, "KVM_SET_SREGS")

    def pdptes(self) -> list[int] | None:
        """The PDPTE registers of PAE paging (KVM_GET_SREGS2), or None where this KVM
        lacks KVM_CAP_SREGS2 or holds none."""
        if not self.vm.system.has(KVM_CAP_SREGS2):
            return None
        s = self.get(KVM_GET_SREGS2, kvm_sregs2(), "KVM_GET_SREGS2")
        return list(s.pdptrs) if s.flags & KVM_SREGS2_FLAGS_PDPTRS_VALID else None

    def set_pdptes(self, pdptes: list[int]) -> bool:
        """Load the PDPTE registers (KVM_SET_SREGS2); False without KVM_CAP_SREGS2 (then
        KVM_SET_SREGS has loaded them from the guest's CR3, as a MOV to CR3 does)."""
        if not self.vm.system.has(KVM_CAP_SREGS2):
            return False
        s = self.get(KVM_GET_SREGS2, kvm_sregs2(), "KVM_GET_SREGS2")
        s.pdptrs[:] = pdptes
        s.flags |= KVM_SREGS2_FLAGS_PDPTRS_VALID
        ioctl(self.fd, KVM_SET_SREGS2, s, "KVM_SET_SREGS2")
        return True

    def fpu(self) -> kvm_fpu:
        return self.get(KVM_GET_FPU, kvm_fpu(), "KVM_GET_FPU")

    def set_fpu(self, f: kvm_fpu) -> None:
        ioctl(self.fd, KVM_SET_FPU, f, "KVM_SET_FPU")

    def events(self) -> kvm_vcpu_events:
        return self.get(KVM_GET_VCPU_EVENTS, kvm_vcpu_events(), "KVM_GET_VCPU_EVENTS")

    def set_events(self, e: kvm_vcpu_events) -> None:
        ioctl(self.fd, KVM_SET_VCPU_EVENTS, e, "KVM_SET_VCPU_EVENTS")

    def sse(self) -> tuple[int, list[int]] | None:
        """(MXCSR, XMM0-7) from the XSAVE area, or None without KVM_CAP_XSAVE.  Some KVMs
        (kvm-pvm) report MXCSR as 0 in kvm_fpu and drop it there: XSAVE is the truth."""
        if not self.vm.system.has(KVM_CAP_XSAVE):
            return None
        x = self.get(KVM_GET_XSAVE, kvm_xsave(), "KVM_GET_XSAVE")
        raw = bytes(x)
        return x.region[XSAVE_MXCSR], [int.from_bytes(raw[XSAVE_XMM + 16 * i:XSAVE_XMM + 16 * i + 16],
                                                      "little") for i in range(8)]

    def set_sse(self, mxcsr: int, xmm: list[int]) -> None:
        if not self.vm.system.has(KVM_CAP_XSAVE):
            return
        x = self.get(KVM_GET_XSAVE, kvm_xsave(), "KVM_GET_XSAVE")
        x.region[XSAVE_MXCSR] = mxcsr
        raw = bytearray(x)
        for i, v in enumerate(xmm):
            raw[XSAVE_XMM + 16 * i:XSAVE_XMM + 16 * i + 16] = v.to_bytes(16, "little")
        x = kvm_xsave.from_buffer_copy(raw)
        x.region[XSAVE_XSTATE_BV] |= XSTATE_SSE      # the SSE state is not in its init state
        ioctl(self.fd, KVM_SET_XSAVE, x, "KVM_SET_XSAVE")

    def debugregs(self) -> kvm_debugregs:
        return self.get(KVM_GET_DEBUGREGS, kvm_debugregs(), "KVM_GET_DEBUGREGS")

    def set_debugregs(self, d: kvm_debugregs) -> None:
        ioctl(self.fd, KVM_SET_DEBUGREGS, d, "KVM_SET_DEBUGREGS")

    def set_guest_debug(self, control: int, debugreg=(0,) * 8) -> None:
        """KVM_SET_GUEST_DEBUG: what of the guest's #DB and #BP exits to us
        (KVM_EXIT_DEBUG), with the hardware debug registers the debugger's."""
        g = kvm_guest_debug(control, 0)
        g.debugreg[:] = list(debugreg)
        ioctl(self.fd, KVM_SET_GUEST_DEBUG, g, "KVM_SET_GUEST_DEBUG")

    def msrs(self, indices: list[int]) -> dict[int, int]:
        buf = _msrs(len(indices))
        buf.nmsrs = len(indices)
        for e, i in zip(buf.entries, indices):
            e.index = i
        n = ioctl(self.fd, KVM_GET_MSRS, buf, "KVM_GET_MSRS")
        return {e.index: e.data for e in buf.entries[:n]}

    def set_msrs(self, values: dict[int, int]) -> int:
        """Set MSRs; how many KVM took (it stops at the first it refuses)."""
        buf = _msrs(len(values))
        buf.nmsrs = len(values)
        for e, (i, v) in zip(buf.entries, values.items()):
            e.index, e.data = i, v
        return ioctl(self.fd, KVM_SET_MSRS, buf, "KVM_SET_MSRS")

    def set_cpuid(self, entries: list[tuple[int, int, int, int, int, int, int]]) -> None:
        """KVM_SET_CPUID2 with (leaf, subleaf, flags, eax, ebx, ecx, edx) entries."""
        buf = _cpuid2(len(entries))
        buf.nent = len(entries)
        for e, (fn, idx, flags, a, b, c, d) in zip(buf.entries, entries):
            e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx = fn, idx, flags, a, b, c, d
        ioctl(self.fd, KVM_SET_CPUID2, buf, "KVM_SET_CPUID2")

    def unblock_signals_in_run(self) -> None:
        """KVM_SET_SIGNAL_MASK with an empty set: no signal is blocked while the guest
        runs, so the thread may block the timer's signal everywhere else and a kick
        that comes between two runs stays pending and ends the next run at once (the
        race-free kick QEMU used before ``immediate_exit``)."""
        class kvm_signal_mask(ctypes.Structure):
            _fields_ = [("len", u32), ("sigset", u8 * 8)]
        ioctl(self.fd, KVM_SET_SIGNAL_MASK, kvm_signal_mask(8), "KVM_SET_SIGNAL_MASK")

    def tsc_khz(self) -> int:
        """The guest TSC's rate in kHz (KVM_GET_TSC_KHZ)."""
        return ioctl(self.fd, KVM_GET_TSC_KHZ, None, "KVM_GET_TSC_KHZ")

    def interrupt(self, vector: int) -> None:
        ioctl(self.fd, KVM_INTERRUPT, kvm_interrupt(vector), "KVM_INTERRUPT")

    def run(self) -> bool:
        """KVM_RUN until an exit; False if a signal ended it (exit reason INTR)."""
        return ioctl(self.fd, KVM_RUN, None, "KVM_RUN") >= 0

    def close(self) -> None:
        """Close the vCPU (its kvm_run mapping goes with the last reference to it)."""
        os.close(self.fd)


def _msrs(n: int):
    class kvm_msrs(ctypes.Structure):
        _fields_ = [("nmsrs", u32), ("pad", u32), ("entries", kvm_msr_entry * n)]
    return kvm_msrs()


# Two tiny guests in flat protected mode (GDT at 0x500: null, code 0x08, data 0x10;
# code at 0x1000) that tell what this host's KVM can run: each ends with OUT to port
# 0x10 when the feature worked.  Real VT-x/SVM KVM runs both; a software KVM
# (kvm-pvm, made for 64-bit paravirtual Linux guests) may not.
PROBE_PAGING = bytes.fromhex(
    "b800200000 0f22d8"        # mov eax, 0x2000 (an identity-mapped page directory); mov cr3, eax
    "b811000080 0f22c0"        # mov eax, PG|ET|PE; mov cr0, eax
    "b041 e610 f4")            # mov al, 'A'; out 0x10, al; hlt
PROBE_INTERRUPT = bytes.fromhex(
    "0f011d00060000"           # lidt [0x600] (limit 0x187, base 0x700: vectors 0-0x30)
    "cd30"                     # int 0x30 -> the handler at 0x1100 (an interrupt gate)
    "b041 e610 f4")            # mov al, 'A'; out 0x10, al; hlt
PROBE_HANDLER = bytes.fromhex("cf")   # iret


def _probe(code: bytes) -> str | None:
    """Run a probe guest; None if it reached its OUT to port 0x10, else the exit it met."""
    reason, port, _ = probe_run(code)
    if reason == EXIT_IO and port == 0x10:
        return None
    return f"KVM_EXIT_{EXIT_NAMES.get(reason, reason)}"


def probe_run(code: bytes, prepare=None) -> tuple[int, int, kvm_debug_exit_arch]:
    """Run ``code`` at 0x1000 in a probe guest until its first exit, ``prepare(vcpu,
    mem)`` called just before: (exit reason, the port of an IO exit, the debug exit)."""
    system = KvmSystem()
    vm = KvmVm(system)
    mem = mmap.mmap(-1, 1 << 22, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    vcpu = None
    try:
        vm.map_memory(0, 0, mem)
        vcpu = KvmVcpu(vm)
        q = lambda v: v.to_bytes(8, "little")
        mem[0x500:0x518] = q(0) + q(0x00CF9A000000FFFF) + q(0x00CF93000000FFFF)
        mem[0x600:0x606] = (0x187).to_bytes(2, "little") + (0x700).to_bytes(4, "little")
        # IDT entry 0x30: offset 0x1100, selector 0x08, 32-bit interrupt gate, DPL 0
        mem[0x700 + 8 * 0x30:0x708 + 8 * 0x30] = q(0x00008E0000081100)
        mem[0x1100:0x1101] = PROBE_HANDLER
        mem[0x2000:0x2004] = (0x3003).to_bytes(4, "little")         # PDE 0 -> the table at 0x3000
        mem[0x3000:0x4000] = b"".join(((i << 12) | 3).to_bytes(4, "little") for i in range(1024))
        mem[0x1000:0x1000 + len(code)] = code
        s = vcpu.sregs()
        for name in ("cs", "ds", "es", "fs", "gs", "ss"):
            seg = getattr(s, name)
            seg.base, seg.limit, seg.g, seg.db, seg.present, seg.s, seg.dpl = 0, 0xFFFFFFFF, 1, 1, 1, 1, 0
            seg.selector, seg.type = (0x08, 0xB) if name == "cs" else (0x10, 0x3)
        s.gdt.base, s.gdt.limit, s.cr0 = 0x500, 0x17, 0x11
        vcpu.set_sregs(s)
        r = vcpu.regs()
        r.rip, r.rflags, r.rsp = 0x1000, 2, 0x8000
        vcpu.set_regs(r)
        if prepare is not None:
            prepare(vcpu, mem)
        vcpu.run()
        run = vcpu.run_page
        return (run.exit_reason, run.exit.io.port,
                kvm_debug_exit_arch.from_buffer_copy(run.exit.debug))
    finally:
        if vcpu is not None:
            vcpu.close()
        vm.close()
        system.close()


def limits() -> dict[str, str]:
    """What this host's KVM cannot run of a 32-bit PC guest: {feature: why}, one line each
    (empty when it runs everything the probes try)."""
    out = {}
    exit_ = _probe(PROBE_PAGING)
    if exit_ is not None:
        out["paging"] = (f"this host's KVM cannot run 32-bit guests with paging on: a mov to "
                         f"CR0 setting PG ended in {exit_}")
    exit_ = _probe(PROBE_INTERRUPT)
    if exit_ is not None:
        out["interrupts"] = (f"this host's KVM cannot deliver interrupts through a 32-bit "
                             f"IDT: an int 0x30 to an iret ended in {exit_}")
    return out
