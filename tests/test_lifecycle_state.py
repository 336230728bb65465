"""State is data: every component implements the protocol, every attribute is accounted
for, and a damaged image is one clear error, never a traceback.

These tests are what catches a device, a CPU field or a monitor attribute added
without state: a port range without an owner, an owner without the protocol, a
monitor attribute declared neither state, wiring nor transient.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import zlib

import pytest

from ringvisor.guests.build import image_path
from ringvisor.hw.machine import Machine, read_image
from ringvisor.hw.state import ARITH_FLAGS, CpuState, Segment
from ringvisor.lifecycle import codec, stream
from ringvisor.lifecycle.protocol import missing_protocol
from ringvisor.lifecycle.vm import VmInfo, capture, restore
from ringvisor.vmm import attach_monitor, create_vm
from ringvisor.vmm.state import undeclared


def test_eflags_are_in_the_state():
    """The lazily computed flags belong to the state: to_dict shows what the CPU holds."""
    m = Machine(1)
    m.mem.write(0x1000, bytes([0xB8, 0xFF, 0xFF, 0xFF, 0xFF,     # mov eax, -1
                               0x83, 0xC0, 0x01,                 # add eax, 1: CF ZF PF AF
                               0xF4]))
    st = m.cpu.state
    for i in range(6):
        st.segs[i] = Segment(0x08 if i == 1 else 0x10, 0, 0xFFFFFFFF, 0xC09B if i == 1 else 0xC093)
    st.cr0, st.eip = 1, 0x1000
    m.cpu.mode_changed()
    m.cpu.run(3)
    assert st.lf_op != 0                          # the translator left a lazy record
    d = st.to_dict()
    # CF PF AF ZF (SDM Vol. 1 §3.4.3.1: 0xFFFFFFFF + 1 carries out of every bit)
    assert d["eflags"] == 0x57 == m.cpu.get_eflags()
    assert not {"lf_op", "lf_res", "lf_a", "lf_b"} & set(d)
    back = CpuState.from_dict(json.loads(json.dumps(d)))
    assert back.get_eflags() == 0x57 and back.to_dict() == d
    assert back.arith_flags() == 0x57 & ARITH_FLAGS


def test_every_device_implements_the_protocol_and_round_trips():
    m = Machine(32)
    m.boot_multiboot(read_image(image_path("kernel")), "run=hello")
    m.run(300_000)
    owners = {id(d) for d in m.devices.values()}
    for rng in m.bus.ranges():
        assert rng.owner is not None, f"port range {rng.name} has no owner (bus.register(owner=...))"
        assert id(rng.owner) in owners, f"{rng.name}'s device is not in Machine.devices"
    for _, _, dev in m.mem.mmio_regions():
        assert id(dev) in owners, f"MMIO device {dev!r} is not in Machine.devices"
    names = set()
    for c in m.components():
        assert not missing_protocol(c), (c, missing_protocol(c))
        assert c.state_name not in names
        names.add(c.state_name)
        state = c.get_state()
        again = codec.decode(codec.encode(state))
        c.set_state(again)
        assert codec.encode(c.get_state()) == codec.encode(state), c.state_name


@pytest.mark.parametrize("mode", ["trapemu", "bt", "paravirt", "hvm"])
def test_every_monitor_attribute_is_declared_and_round_trips(mode):
    img = read_image(image_path("kernel-pv" if mode == "paravirt" else "kernel"))
    m, mon = create_vm(img, mode, "run=hello", 32)
    m.run(400_000)
    parts = [mon, mon.shadow, mon.platform] + \
        ([mon.tc] if mode == "bt" else []) + ([mon.events, mon.timer] if mode == "paravirt" else [])
    for p in parts:
        assert not undeclared(p), f"{type(p).__name__}: {sorted(undeclared(p))} are neither " \
                                  f"STATE, WIRING nor TRANSIENT (vmm/state.py)"
    state = codec.encode(mon.get_state())
    mon.set_state(codec.decode(state))
    assert codec.encode(mon.get_state()) == state


def test_vmx_state_round_trips_and_forgeries_are_refused():
    """The CPU's VMX state (in its section): VMX operation, the current VMCS and its fields,
    non-root operation.  A VMX state that no processor could be in is one clear error."""
    m, mon = create_vm(read_image(image_path("kernel")), "hvm", "run=hello", 32)
    m.run(50_000)
    vmx = m.cpu.get_state()["vmx"]
    assert vmx["on"] and vmx["current"] in vmx["vmcs"] and vmx["vmcs"][vmx["current"]]["launched"]
    assert vmx["vmcs"][vmx["current"]]["fields"]          # (the guest- and host-state areas)
    assert m.cpu.nonroot == vmx["nonroot"]
    secs = capture(m, mon, VmInfo())
    m2, _, _ = restore(secs, attach_monitor)
    assert codec.encode(m2.cpu.get_state()) == codec.encode(m.cpu.get_state())
    assert m2.cpu.vmx.vmcs.fields == m.cpu.vmx.vmcs.fields
    # under EPT (hvm's default) the MMU of a restored guest walks the same EPT
    assert m.cpu.nonroot and m2.cpu.mmu.ept is not None and m2.cpu.mmu.ept.pml4 == m.cpu.mmu.ept.pml4
    cpu = next(i for i, s in enumerate(secs) if s.name == "cpu")
    state = codec.decode(secs[cpu].payload)
    forgeries = [{"current": 0x1234000}, {"on": False, "current": None, "nonroot": True},
                 {"vmcs": {0x5000: {"fields": {0x7777: 1}, "launched": True}}},
                 {"event": [1, 2]}]
    for bad in forgeries:
        forged = list(secs)
        forged[cpu] = stream.Section(stream.STATE, "cpu", 2,
                                     codec.encode({**state, "vmx": {**state["vmx"], **bad}}))
        with pytest.raises(stream.BadImage, match="corrupt state for 'cpu'") as e:
            restore(stream.read_sections(stream.pack_image(forged)), attach_monitor)
        assert "\n" not in str(e.value)


def test_a_monitor_state_of_version_2_is_a_guest_without_an_ldt():
    """Images from before the LDT, NMIs and real mode were virtualized (monitor state 2:
    no ``ldt``, a virtual CPU without LDTR's base and limit or NMI blocking, a virtual
    APIC without a waiting NMI, no ``real``) restore as a guest with no LDT and no NMI,
    in protected mode."""
    from ringvisor.lifecycle.vm import MONITOR_SECTION
    m, mon = create_vm(read_image(image_path("kernel")), "trapemu", "run=hello", 32)
    m.run(100_000)
    secs = capture(m, mon, VmInfo())
    i = next(i for i, s in enumerate(secs) if s.name == MONITOR_SECTION)
    assert secs[i].version == 6
    state = codec.decode(secs[i].payload)
    del state["real"], state["ldt"], state["vcpu"]["ldt_base"], state["vcpu"]["ldt_limit"]
    del state["vcpu"]["nmi_blocked"], state["platform"]["vapic"]["nmi"]
    state["shadow"].pop("watched_ldt")
    secs[i] = stream.Section(stream.STATE, MONITOR_SECTION, 2, codec.encode(state))
    m2, mon2, _ = restore(stream.read_sections(stream.pack_image(secs)), attach_monitor)
    assert mon2.vcpu.ldtr == 0 and mon2.ldt.n == 0 and not mon2.shadow.watched_ldt
    assert codec.encode(mon2.get_state()) == codec.encode(mon.get_state())


def test_a_monitor_state_of_version_5_has_no_gdt_rounds():
    """Images from before the GDT's rounds were saved (monitor state 5) restore with a
    fresh table's rounds; one of a newer version than this ringvisor's is refused in one
    line."""
    from ringvisor.lifecycle.vm import MONITOR_SECTION
    from ringvisor.vmm.gdt import ROUNDS
    m, mon = create_vm(read_image(image_path("kernel")), "trapemu",
                       "run=pgfault,syscall gdt=shared", 32)
    m.run(200_000)
    assert mon.gdt.bursts
    secs = capture(m, mon, VmInfo())
    i = next(i for i, s in enumerate(secs) if s.name == MONITOR_SECTION)
    state = codec.decode(secs[i].payload)
    for table in ("gdt", "ldt"):
        for k in ROUNDS:
            del state[table][k]
    old = list(secs)
    old[i] = stream.Section(stream.STATE, MONITOR_SECTION, 5, codec.encode(state))
    m2, mon2, _ = restore(stream.read_sections(stream.pack_image(old)), attach_monitor)
    assert {k: getattr(mon2.gdt, k) for k in ROUNDS} == ROUNDS
    assert mon2.gdt.relaxed == mon.gdt.relaxed and mon2.gdt.hot == mon.gdt.hot
    newer = list(secs)
    newer[i] = stream.Section(stream.STATE, MONITOR_SECTION, 7, secs[i].payload)
    with pytest.raises(stream.BadImage, match="version 7; this ringvisor reads version 6"):
        restore(stream.read_sections(stream.pack_image(newer)), attach_monitor)


def test_codec_round_trip():
    value = {"a": [1, 2, (3, 4)], "b": b"\x00\xff", "c": {1: "x", (2, 3): None}, "d": {5, 1},
             "e": True, "$x": 1}
    back = codec.decode(codec.encode(value))
    assert back == {"a": [1, 2, [3, 4]], "b": b"\x00\xff", "c": {1: "x", (2, 3): None},
                    "d": {1, 5}, "e": True, "$x": 1}
    with pytest.raises(codec.StateError, match=r"state\.f: object"):
        codec.encode({"f": object()})
    with pytest.raises(codec.StateError):
        codec.encode({"g": 1.5})


# -- damaged images --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_image() -> bytes:
    m = Machine(1)
    m.mem.write(0x1000, b"\xEB\xFE")
    m.cpu.state.eip = 0x1000
    m.cpu.mode_changed()
    m.run(100)
    return stream.pack_image(capture(m, None, VmInfo(description="fuzz")))


def load(data: bytes):
    return restore(stream.read_sections(data, "x"), attach_monitor, "jit", None, "x")


def repack(sections) -> bytes:
    return stream.pack_image(sections)


def test_damaged_images_are_one_clear_error(small_image):
    load(small_image)                                  # the undamaged one restores
    rng = random.Random(12)
    cases = [b"", b"RINGVSAV", small_image[:30], b"\x7fELF" + small_image[4:],
             read_image(image_path("kernel"))[:4096]]
    cases += [small_image[:n] for n in sorted(rng.sample(range(len(small_image)), 60))]
    for _ in range(150):
        b = bytearray(small_image)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        cases.append(bytes(b))
    # a newer format
    head = struct.pack("<8sII", stream.MAGIC, stream.FORMAT_VERSION + 1, 0)
    cases.append(head + struct.pack("<I", zlib.crc32(head)) + small_image[20:])
    for data in cases:
        with pytest.raises(stream.BadImage) as e:
            load(data)
        assert "\n" not in str(e.value)


def test_forged_sections_are_one_clear_error(small_image):
    """Checksums right, contents wrong: a newer section version, unknown or missing
    sections, and state of the wrong shape."""
    secs = stream.read_sections(small_image)
    cpu = next(i for i, s in enumerate(secs) if s.name == "cpu")

    def with_section(i, **kw):
        out = list(secs)
        s = out[i]
        out[i] = stream.Section(kw.get("kind", s.kind), kw.get("name", s.name),
                                kw.get("version", s.version), kw.get("payload", s.payload))
        return out

    forged = [with_section(cpu, version=99), with_section(cpu, name="cpu2"),
              [s for s in secs if s.name != "pic"], secs + [secs[cpu]],
              [s for s in secs if s.kind != stream.RAM],
              [s for s in secs if s.kind != stream.META]]
    rng = random.Random(3)
    junk = [b"{}", b"[]", b"null", b"{\"regs\": 7}", b"not json", b"{\"$b\": 5}"]
    for i, s in enumerate(secs):
        if s.kind == stream.STATE:
            forged += [with_section(i, payload=j) for j in junk]
            state = json.loads(s.payload)
            if isinstance(state, dict) and state:
                for _ in range(8):
                    k = rng.choice(sorted(state))
                    bad = dict(state)
                    bad[k] = rng.choice(["x", -1, [None], {"y": 1}, 2 ** 80])
                    forged.append(with_section(i, payload=json.dumps(bad).encode()))
    for f in forged:
        try:
            load(repack(f))
        except stream.BadImage as e:
            assert "\n" not in str(e)
        # a forged value may also be one a machine can take (a register of -1 is masked):
        # what must never happen is any other exception


def test_a_cpu_section_of_version_1_is_a_processor_never_in_vmx_operation(small_image):
    """Images from before the VMX state was saved (the ``cpu`` section's version 1, without
    ``vmx``) restore, the processor outside VMX operation."""
    secs = stream.read_sections(small_image)
    cpu = next(i for i, s in enumerate(secs) if s.name == "cpu")
    assert secs[cpu].version == 2
    state = codec.decode(secs[cpu].payload)
    del state["vmx"]
    secs[cpu] = stream.Section(stream.STATE, "cpu", 1, codec.encode(state))
    m = load(repack(secs))[0]
    assert not m.cpu.vmx.on and m.cpu.vmx.current is None and not m.cpu.nonroot
    assert m.cpu.get_state() == load(small_image)[0].cpu.get_state()


def test_cli_restore_of_a_bad_image(tmp_path, small_image):
    bad = tmp_path / "bad.rv"
    bad.write_bytes(small_image[:-5])
    p = subprocess.run([sys.executable, "-m", "ringvisor", "restore", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "truncated" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "ringvisor", "restore", str(tmp_path / "none.rv")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no such image" in p.stderr


def test_a_save_to_a_device_or_pipe_writes_it_in_place(tmp_path):
    """``--save /dev/null`` or a FIFO a script reads: the stream goes into it, and the
    node stays what it was (a temporary file renamed over it would replace it); a
    device that refuses the data (/dev/full's ENOSPC) is one ImageError."""
    import os
    import stat
    import threading
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    stream.write_atomic(fifo, [b"ab", b"cd"])
    reader.join(60)
    assert got == [b"abcd"] and stat.S_ISFIFO(fifo.stat().st_mode)
    if os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode):
        with pytest.raises(stream.ImageError, match="No space left"):
            stream.write_atomic("/dev/full", b"x")
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
