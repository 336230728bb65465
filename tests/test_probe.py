"""The sensitive-instruction probe image (guests/probe, after Robin & Irvine).

The image is built from source into a temporary directory and run on
ringvisor's native machine (both engines) and on ``qemu-system-i386
-kernel``: the output must be identical, and the native values are the ones
the SDM prescribes for bare hardware.  ``ringvisor.probe_table`` is tested on
synthetic output.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from ringvisor import probe_table
from ringvisor.guests import build as guest_build
from ringvisor.tools.qemu import QemuTimeout, find_qemu, guest_exit_code, run_qemu

MAX_INSTRUCTIONS = 5_000_000          # the probe retires about 63 000
QEMU_TIMEOUT = 30

# Everything but the table addresses (checked against the ELF symbols).
EXPECTED_NATIVE = {
    "SLDT": ("0000", "0000"),
    "STR": ("0028", "0028"),
    "SMSW": ("0011", "0011"),                       # PE | ET, no paging
    "PUSHF": ("IF=0,IOPL=0", "IF=1,IOPL=0"),
    "POPF": ("IF=0,IF=1", "IF=1,IF=1"),              # ring 3: IF silently unchanged
    "LAR": ("00c09b00/00c0fb00", "ZF=0/00c0fb00"),
    "LSL": ("ffffffff/ffffffff", "ZF=0/ffffffff"),
    "VERR": ("ZF=1/ZF=1", "ZF=0/ZF=0"),
    "VERW": ("ZF=1/ZF=1", "ZF=0/ZF=1"),
    "PUSH_CS": ("0008", "001b"),
    "PUSH_SS": ("0010", "0023"),
    "MOV_CS": ("0008", "001b"),
    "MOV_SS": ("0010", "0023"),
    "MOV_DS": ("0010", "0023"),
    "FAR_CALL": ("ok", "ok"),
    "FAR_JMP": ("ok", "ok"),
    "FAR_RET": ("ok", "ok"),
    "INT": ("0008", "001b"),
    "IRET": ("IF=0,IF=1", "IF=1,IF=1"),
    "CLI": ("ok", "#GP(0000)"),
    "HLT": ("skip", "#GP(0000)"),
}


@pytest.fixture(scope="module")
def probe_image() -> Path:
    # the shipped image: test_guest_kernel checks it is what the sources build
    return guest_build.image_path("probe")


def run_ringvisor(image: Path, engine: str = "jit") -> tuple[str, int | None]:
    from ringvisor.hw.machine import run_image
    out, status = run_image(image, max_instructions=MAX_INSTRUCTIONS, engine=engine)
    return out.decode("utf-8", "replace"), guest_exit_code(status)


def run_on_qemu(image: Path) -> tuple[str, int | None]:
    if find_qemu() is None:
        pytest.skip("qemu-system-i386 is not installed")
    try:
        r = run_qemu(image, timeout=QEMU_TIMEOUT)
    except QemuTimeout as e:
        pytest.fail(str(e))
    return r.output.decode("utf-8", "replace"), r.guest_exit_code


@pytest.fixture(scope="module")
def native(probe_image) -> str:
    out, code = run_ringvisor(probe_image)
    assert code == 0, out
    return out


def _symbol(image: Path, name: str) -> int:
    with open(image, "rb") as f:
        sym = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)
        return sym[0]["st_value"]


# ---------------------------------------------------------------- the image

def test_probe_is_a_shipped_image():
    assert "probe" in guest_build.IMAGE_NAMES
    assert guest_build.image_path("probe").is_file()
    with pytest.raises(guest_build.ImageError):
        guest_build.build_image("no-such-image")


def test_native_values(probe_image, native):
    results = probe_table.parse(native)
    assert list(results) == [name for name, _ in probe_table.SENSITIVE]
    gdt, idt = _symbol(probe_image, "gdt"), _symbol(probe_image, "idt")
    # 6 descriptors; 256 gates.  Ring 3 reads the same (real) registers.
    assert results["SGDT"] == (f"{gdt:08x}/002f", f"{gdt:08x}/002f")
    assert results["SIDT"] == (f"{idt:08x}/07ff", f"{idt:08x}/07ff")
    for name, values in EXPECTED_NATIVE.items():
        assert results[name] == values, name
    assert native.endswith("probe done\n")


def test_table_addresses_fixed_by_the_link(probe_image, tmp_path):
    """The tables sit right after the Multiboot header, so SGDT/SIDT do not
    depend on the code: an -O0 build prints exactly the same."""
    assert _symbol(probe_image, "gdt") == 0x00100040
    o0 = guest_build.build_image("probe", tmp_path, opt="0")
    assert run_ringvisor(o0) == run_ringvisor(probe_image)


def test_interpreter_matches(probe_image, native):
    assert run_ringvisor(probe_image, engine="interp") == (native, 0)


@pytest.mark.qemu
def test_qemu_matches(probe_image, native):
    out, code = run_on_qemu(probe_image)
    assert code == 0
    assert out == native


def test_shipped_image_matches_source(probe_image, native):
    assert run_ringvisor(guest_build.image_path("probe")) == (native, 0)


def test_readme_shows_the_native_output(native):
    readme = (guest_build.SOURCE_DIR / "README.md").read_text()
    m = re.search(r"^\$ ringvisor run probe\n(.*?)^```", readme, re.M | re.S)
    assert m, "guests/README.md has no sample probe output"
    assert m.group(1) == native


# ---------------------------------------------------------------- probe_table

SAMPLE = """\
probe SGDT kernel=00100040/002f user=00100040/002f
probe POPF kernel=IF=0,IF=1 user=IF=1,IF=1
probe CLI kernel=ok user=#GP(0000)
probe done
"""


def test_parse_sample():
    assert probe_table.parse(SAMPLE) == {
        "SGDT": ("00100040/002f", "00100040/002f"),
        "POPF": ("IF=0,IF=1", "IF=1,IF=1"),
        "CLI": ("ok", "#GP(0000)"),
    }
    # other lines (a monitor's messages, CR LF line ends) are ignored
    noisy = "ringvisor: starting\r\n" + SAMPLE.replace("\n", "\r\n") + "[timing] x\n"
    assert probe_table.parse(noisy) == probe_table.parse(SAMPLE)


@pytest.mark.parametrize("text, message", [
    ("", "no 'probe done'"),
    (SAMPLE.replace("probe done\n", ""), "no 'probe done' line (last probe: CLI)"),
    ("probe SGDT kernel=1 user=2\nprobe SGDT kernel=1 user=2\nprobe done\n", "twice"),
    ("probe SGDT kernel=1\nprobe done\n", "malformed"),
    ("probe SGDT kernel=1 user=2 extra=3\nprobe done\n", "malformed"),
    ("probe SGDT user=2 kernel=1\nprobe done\n", "malformed"),
    ("probe sgdt kernel=1 user=2\nprobe done\n", "malformed"),
    ("probe SGDT kernel= user=2\nprobe done\n", "malformed"),
    ("probe done\n", "no probe lines"),
    (SAMPLE + "probe LAR kernel=1 user=2\n", "after 'probe done'"),
])
def test_parse_rejects_malformed_output(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        probe_table.parse(text)


def test_table_marks_differences():
    native = probe_table.parse(SAMPLE)
    trapemu = dict(native, POPF=("IF=1,IF=1", "IF=1,IF=1"), SGDT=("00200000/ffff", "00200000/ffff"))
    bt = {"SGDT": native["SGDT"], "EXTRA": ("a", "b")}
    text = probe_table.table({"native": native, "trapemu": trapemu, "bt": bt})
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["probe", "native", "trapemu", "bt"]
    assert lines[1].split() == ["kernel", "user"] * 3
    rows = {line.split()[0]: line for line in lines[3:] if line and not line.startswith("legend")}
    # rows in SENSITIVE order, then unknown probes
    assert list(rows) == ["SGDT", "POPF", "CLI", "EXTRA"]
    assert rows["SGDT"].split()[:7] == ["SGDT", "00100040/002f", "00100040/002f",
                                        "00200000/ffff*", "00200000/ffff*",
                                        "00100040/002f", "00100040/002f"]
    assert rows["POPF"].split()[:7] == ["POPF", "IF=0,IF=1", "IF=1,IF=1", "IF=1,IF=1*",
                                        "IF=1,IF=1", "-", "-"]
    assert rows["CLI"].split()[:5] == ["CLI", "ok", "#GP(0000)", "ok", "#GP(0000)"]
    assert rows["EXTRA"].split() == ["EXTRA", "-", "-", "-", "-", "a*", "b*"]
    assert "IF after popf" in rows["POPF"]           # the description column
    assert lines[-1].startswith("legend: * = differs from native")
    # the columns line up under their headers
    column = lines[0].index("trapemu")
    assert rows["SGDT"][column:].startswith("00200000/ffff*")
    assert rows["POPF"][column:].startswith("IF=1,IF=1*")
    assert rows["EXTRA"][column:].startswith("- ")


def test_table_without_native_and_without_descriptions():
    a = probe_table.parse(SAMPLE)
    b = dict(a, CLI=("ok", "ok"))
    text = probe_table.table({"trapemu": a, "bt": b}, describe=False)
    assert "what it shows" not in text and "IF after popf" not in text
    cli = next(line for line in text.splitlines() if line.startswith("CLI"))
    assert cli.split() == ["CLI", "ok", "#GP(0000)", "ok", "ok*"]
    assert "differs from trapemu" in text
    with pytest.raises(ValueError):
        probe_table.table({})


def test_table_of_the_real_output(native):
    results = probe_table.parse(native)
    text = probe_table.table({"native": results, "native-again": results})
    assert "*" not in text.split("legend:")[0]
    assert len(text.splitlines()) == 3 + len(results) + 2
