"""The guest software: teaching kernel, user programs and bench images.

Every image is built from source (``guests/``) into a temporary directory,
then booted with ``qemu-system-i386 -kernel`` and on ringvisor itself (both
engines).  Output lines tagged ``[timing] ``
depend on the machine's speed and are left out of every comparison; all other
output must match what is computed here independently (CRC-32 via zlib, the
other workloads re-implemented in Python).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from ringvisor.errors import ImageError
from ringvisor.guests import build as guest_build

QEMU = shutil.which("qemu-system-i386")
QEMU_ARGS = ["-m", "32", "-display", "none", "-serial", "stdio", "-monitor", "none",
             "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
QEMU_TIMEOUT = 60
RINGVISOR_MAX_INSTRUCTIONS = 200_000_000
PANIC_STATUS = 0x10
M32 = 0xFFFFFFFF

# ringvisor runs with both engines: the translator and the one-instruction interpreter
RINGVISOR_PLATFORMS = ["ringvisor", "ringvisor-interp"]
PLATFORMS = [pytest.param("qemu", marks=pytest.mark.qemu), *RINGVISOR_PLATFORMS]


# ---------------------------------------------------------------- running

def run_platform(platform: str, image: Path, cmdline: str, stdin: bytes = b"") -> tuple[str, int]:
    """Boot ``image`` with ``cmdline``, feed ``stdin`` to COM1; return the
    serial output and the guest's exit status: the value it wrote to the
    isa-debug-exit port 0xf4 (0 = clean halt, 0x10 = panic), or -1 if it
    stopped some other way."""
    if platform == "qemu":
        if QEMU is None:
            pytest.skip("qemu-system-i386 is not installed")
        try:
            proc = subprocess.run([QEMU, "-kernel", str(image), "-append", cmdline, *QEMU_ARGS],
                                  input=stdin, capture_output=True, timeout=QEMU_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode("utf-8", "replace")
            pytest.fail(f"QEMU timed out after {QEMU_TIMEOUT} s; output so far:\n{out}")
        rc = proc.returncode
        # isa-debug-exit: QEMU exits with (value << 1) | 1.
        return proc.stdout.decode("utf-8", "replace"), rc >> 1 if rc & 1 else -1
    if platform in RINGVISOR_PLATFORMS:
        from ringvisor.hw.machine import run_image
        out, raw = run_image(image, cmdline=cmdline, mem_mb=32, stdin=stdin,
                             max_instructions=RINGVISOR_MAX_INSTRUCTIONS,
                             engine="interp" if platform.endswith("interp") else "jit")
        # run_image reports the status QEMU would exit with.
        return out.decode("utf-8", "replace"), raw >> 1 if raw & 1 else -1
    raise ValueError(f"unknown platform {platform!r}")


def untagged(text: str) -> list[str]:
    """The output lines that must be identical on every platform."""
    return [line for line in text.split("\n") if not line.startswith("[timing] ")]


# ---------------------------------------------------------------- references

def _lcg(seed: int):
    while True:
        seed = (seed * 1664525 + 1013904223) & M32
        yield seed


def ref_sieve(iters: int) -> int:
    chk = 0
    for it in range(iters):
        n = 4096 + 256 * (it % 16)
        flags = bytearray([1]) * (n + 1)
        count = total = 0
        for i in range(2, n + 1):
            if flags[i]:
                count += 1
                total += i
                flags[i * i::i] = bytes(len(range(i * i, n + 1, i)))
        chk = (chk * 31 + count * 65537 + total) & M32
    return chk


def ref_crc32(iters: int) -> int:
    g = _lcg(1)
    buf = bytes(next(g) >> 24 for _ in range(1024))
    return zlib.crc32(buf * iters) & M32


def ref_matmul(iters: int) -> int:
    g, n = _lcg(7), 16
    a = [[(next(g) >> 16) & 0xFF for _ in range(n)] for _ in range(n)]
    b = [[(next(g) >> 16) & 0xFF for _ in range(n)] for _ in range(n)]
    chk = 0
    for it in range(iters):
        s = 0
        for i in range(n):
            for j in range(n):
                s += (sum(a[i][k] * b[k][j] for k in range(n)) & M32) ^ (n * i + j)
        s &= M32
        chk = (chk * 33 + s) & M32
        a[it % n][(it * 7) % n] = s & 0xFFFF
    return chk


def ref_qsort(iters: int) -> int:
    g, chk = _lcg(42), 0
    for _ in range(iters):
        arr = sorted(next(g) for _ in range(512))
        chk = (chk * 31 + sum(v * (i + 1) for i, v in enumerate(arr))) & M32
    return chk


WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
         "mike november oscar papa").split()


def ref_strings(iters: int) -> int:
    chk = 0
    for it in range(iters):
        sentence = " ".join(WORDS[(it + 5 * k) % 16] for k in range(12)) + "."
        rev = sentence[::-1]
        cmp = (sentence > rev) - (sentence < rev)
        pos = sentence.find(WORDS[it % 16])
        chk = (chk * 131 + len(sentence) + (pos + 1) * 7 + (cmp + 1)) & M32
    return chk


def ref_dhrystone(iters: int) -> int:
    """workloads/dhrystone.c, with its constant parts folded by hand."""
    arr1, arr2 = [0] * 50, [[0] * 50 for _ in range(50)]
    a_number, glob_int, chk = 40, 0, 0
    char1 = char2 = ord("A")
    for i in range(iters):
        a, b = 2 + (i & 7), 3
        c = char1 + 1                          # proc_chars(char1, 'C')
        if c == ord("C"):
            char1 = ord("X")
        else:
            char2 = c
            char1 = ord("A") if c > ord("Z") else c
        differ = i & 1                         # !text_equal(s1, s2)
        while a < b:
            c = (5 * a - b) & M32
            t = (a * 3 + c) & M32
            c = t // 7 + t % 5
            a += 1
        c = (a * b) & M32
        b = c // a
        c = (7 * (c - b) - a) & M32
        k = i % 40 + 5                         # proc_arrays(i, c)
        arr1[k] = c
        arr1[k + 1] = (c + 1) & M32
        arr1[k] = (arr1[k] + k) & M32
        for j in range(k, k + 3):
            arr2[k][j] = k * j
        arr2[k][k - 1] += 1
        arr2[k + 3][k] = arr1[k]
        glob_int = (arr2[k][k] + arr1[k + 1]) & M32
        b_number = (a_number + i) & M32        # proc_record(&rec_a, i)
        b_colour = 1 if i & 1 else 2           # GREEN / BLUE (rec_a stays RED)
        t = (b_number * 3 + glob_int) & M32
        b_weight = t // 7 + t % 5
        if differ:
            chk = (chk + b_number + b_weight) & M32
        else:
            chk ^= (b_weight * 31) & M32
        chk = (chk * 17 + b_colour + char1 + c) & M32
        a_number = b_number % 1000
    chk ^= (glob_int + char2) & M32
    for k in range(50):
        chk = (chk + arr1[k] + arr2[k][k]) & M32
    return chk


CPU_REFS = {"sieve": ref_sieve, "crc32": ref_crc32, "matmul": ref_matmul,
            "qsort": ref_qsort, "strings": ref_strings, "dhrystone": ref_dhrystone}
# Small iteration counts (~0.2-0.5 M instructions each).
CPU_ITERS = {"sieve": 3, "crc32": 40, "matmul": 8, "qsort": 5, "strings": 60, "dhrystone": 500}


def _cow_iters(n: int) -> int:
    return (n + 15) // 16 * 16


# name -> (iters, iterations reported, expected checksum)
OS_PROGRAMS = {
    "syscall": (1000, 1000, 1000),
    "in": (20000, 20000, 20000),
    "crwr": (20000, 20000, 20000),
    "callret": (50000, 50000, 50000),
    "pgfault": (100, 100, 100),
    "divzero": (500, 500, 500),
    "ptemod": (20001, 20001, 10001 * 1 + 10000 * 0x10000),
    "null": (1000, 1000, 1000),
    "ctxsw": (300, 300, 300),
    "forkwait": (12, 12, sum(i & 63 for i in range(12))),
    "pagefault": (40, _cow_iters(40), 120 + _cow_iters(40)),
}


def result_line(name: str, iters: int, checksum: int) -> str:
    return f"{name}: iters={iters} checksum=0x{checksum:08x}"


def check_timing_line(out: str, name: str, iters: int) -> None:
    assert re.search(rf"^\[timing\] {re.escape(name)}: \d+ cycles/op "
                     rf"\(iters={iters}, cycles=\d+\)$", out, re.M), out


BANNER = "ringvisor teaching kernel (timer 100 Hz)"


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, Path]:
    return guest_build.build_all(tmp_path_factory.mktemp("guest-images"))


# ---------------------------------------------------------------- tests

def test_reference_models():
    """The Python references agree with checksums seen on QEMU at -O0..-O3."""
    assert ref_sieve(20) == 0x98D11020
    assert ref_crc32(250) == 0x2A6BE1E1
    assert ref_matmul(60) == 0x09E7E21A
    assert ref_qsort(40) == 0x49164DAE
    assert ref_strings(400) == 0x2D994E70
    assert ref_dhrystone(3500) == 0x89472E00


def test_build_produces_multiboot_elfs(images):
    assert set(images) == set(guest_build.IMAGE_NAMES)
    for name, path in images.items():
        data = path.read_bytes()
        assert data[:4] == b"\x7fELF" and data[4] == 1, name          # ELF32
        assert int.from_bytes(data[18:20], "little") == 3, name       # EM_386
        head = data[:8192]
        offsets = [m.start() for m in re.finditer(re.escape(b"\x02\xb0\xad\x1b"), head)]
        assert any(o % 4 == 0 and (int.from_bytes(head[o:o + 4], "little")
                                   + int.from_bytes(head[o + 4:o + 8], "little")
                                   + int.from_bytes(head[o + 8:o + 12], "little")) & M32 == 0
                   for o in offsets), f"{name}: no Multiboot header in the first 8 KiB"
        assert len(data) < 256 * 1024, name
        # the shipped image is what the sources build (the build is reproducible), so the
        # tests that run the shipped images test the sources: a stale one is caught here
        assert data == guest_build.image_path(name).read_bytes(), (
            f"{name}: the shipped image differs from a fresh build: "
            "rebuild with 'python -m ringvisor.guests.build'")
    report = "kernel-pv" + guest_build.PV_REPORT_SUFFIX
    assert ((images["kernel-pv"].parent / report).read_text()
            == (guest_build.IMAGES_DIR / report).read_text())


def test_image_path():
    with pytest.raises(ImageError):
        guest_build.image_path("no-such-image")
    for name in guest_build.IMAGE_NAMES:
        assert guest_build.image_path(name).is_file()


_program_runs: dict[tuple[str, str], tuple[str, int]] = {}


def program_run(platform: str, image: Path, programs: dict[str, int]) -> tuple[str, int]:
    """One boot of the teaching kernel that runs every program of ``programs`` (name ->
    iterations) in turn, shared by the tests of its programs: init starts each in a fresh
    process, so a program prints what it prints when it is the only one, and a boot of
    its own per program (0.2 s of CPU on the translator, 0.5 s on the interpreter) would
    check nothing more."""
    cmdline = "run=" + ",".join(f"{name}:{iters}" for name, iters in programs.items())
    if (platform, cmdline) not in _program_runs:
        _program_runs[platform, cmdline] = run_platform(platform, image, cmdline)
    return _program_runs[platform, cmdline]


def check_program_run(out: str, status: int, results: list[str], name: str,
                      reported: int) -> None:
    """Every program's result line in order and nothing else (the ``results`` all the
    run's tests expect), then ``name``'s timing line."""
    assert untagged(out) == [BANNER, *results, f"init: {len(results)} programs run, 0 failed",
                             "kernel: halt (status 0)", ""]
    check_timing_line(out, name, reported)
    assert status == 0


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("name", list(CPU_REFS))
def test_cpu_workload(platform, images, name):
    out, status = program_run(platform, images["kernel"], CPU_ITERS)
    results = [result_line(n, i, CPU_REFS[n](i)) for n, i in CPU_ITERS.items()]
    check_program_run(out, status, results, name, CPU_ITERS[name])


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("name", list(CPU_REFS))
def test_bench_image(platform, images, name):
    iters = CPU_ITERS[name]
    out, status = run_platform(platform, images[f"bench-{name}"], f"iters={iters}")
    assert untagged(out) == [result_line(name, iters, CPU_REFS[name](iters)), ""]
    check_timing_line(out, name, iters)
    assert status == 0


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("name", list(OS_PROGRAMS))
def test_os_benchmark(platform, images, name):
    out, status = program_run(platform, images["kernel"],
                              {n: iters for n, (iters, _, _) in OS_PROGRAMS.items()})
    results = [result_line(n, reported, checksum) for n, (_, reported, checksum)
               in OS_PROGRAMS.items()]
    check_program_run(out, status, results, name, OS_PROGRAMS[name][1])


@pytest.mark.parametrize("platform", PLATFORMS)
def test_faulting_programs_are_killed(platform, images):
    out, status = run_platform(platform, images["kernel"],
                               "run=fault-null,hello,fault-priv,fault-div,sieve:2")
    lines = untagged(out)
    kill = r"kernel: pid {} \({}\) killed: {}, eip 0x[0-9a-f]{{8}}"
    expected = [
        re.escape(BANNER),
        "fault-null: reading address 0",
        kill.format(2, "fault-null", r"page fault at 0x00000000 \(read\)"),
        "init: fault-null exited with status 142",
        "hello from pid 3",
        "fault-priv: executing hlt in user mode",
        kill.format(4, "fault-priv", "general protection fault"),
        "init: fault-priv exited with status 141",
        "fault-div: dividing by zero",
        kill.format(5, "fault-div", "divide error"),
        "init: fault-div exited with status 128",
        re.escape(result_line("sieve", 2, ref_sieve(2))),
        "init: 5 programs run, 3 failed",
        re.escape("kernel: halt (status 1)"),
        "",
    ]
    assert len(lines) == len(expected), out
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), (line, pattern)
    assert status == 1


def _c_div(a: int, b: int) -> tuple[int, int]:
    q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
    return q, a - q * b


@pytest.mark.parametrize("platform", PLATFORMS)
def test_selftest(platform, images):
    out, status = run_platform(platform, images["kernel"], "run=selftest")
    assert "selftest: 21 checks, 0 failed" in out, out
    assert "FAILED" not in out
    for a, b in ((0x123456789ABCDEF0, 0x12345), (1000000000000, 7),
                 (0xFFFFFFFFFFFFFFFF, 0x100000001), (12345, 0xFFFFFFFFF)):
        assert f"selftest: div64 {a:x} / {b:x} = {a // b:x} rem {a % b:x}\n" in out
    for a, b in ((-1000000000000, 7), (999999999999, -0x123456789)):
        q, r = _c_div(a, b)
        assert f"selftest: div64 {a} / {b} = {q} rem {r}\n" in out
    assert re.search(r"^kernel: pid \d+ \(selftest\) killed: page fault at 0x[0-9a-f]{8} "
                     r"\(write\)", out, re.M)
    assert out.endswith("init: 1 program run, 0 failed\nkernel: halt (status 0)\n")
    assert status == 0


@pytest.mark.parametrize("platform", PLATFORMS)
def test_kernel_panic(platform, images):
    out, status = run_platform(platform, images["kernel"], "run=panic hz=250")
    lines = untagged(out)
    assert lines[:4] == ["ringvisor teaching kernel (timer 250 Hz)",
                         "panic: asking the kernel to dereference NULL", "",
                         "PANIC: page fault in kernel mode at 0x00000000"], out
    assert re.fullmatch(r"  eax=[0-9a-f]{8} ebx=[0-9a-f]{8} ecx=[0-9a-f]{8} edx=[0-9a-f]{8}",
                        lines[4])
    assert re.fullmatch(r"  eip=c0[0-9a-f]{6} cs=0008 eflags=[0-9a-f]{8} vector=14 "
                        r"error=00000000", lines[6])
    assert re.fullmatch(r"  cr0=80010011 cr2=00000000 cr3=[0-9a-f]{8}", lines[7])
    assert lines[8:] == ["  current: pid 2 (panic)", ""]
    assert status == PANIC_STATUS


@pytest.mark.parametrize("platform", PLATFORMS)
def test_command_line_errors(platform, images):
    out, status = run_platform(platform, images["kernel"], "run=sieve,nosuch")
    assert untagged(out) == [BANNER, "init: unknown program 'nosuch'",
                             "kernel: halt (status 2)", ""]
    assert status == 2
    out, status = run_platform(platform, images["kernel"], "run=sieve hz=5")
    assert untagged(out) == ["kernel: hz must be a number from 10 to 10000, not '5'", ""]
    assert status == 2
    out, status = run_platform(platform, images["kernel"], "run=sieve gdt=own")
    assert untagged(out) == ["kernel: gdt must be 'page' or 'shared', not 'own'", ""]
    assert status == 2


def _program_table() -> list[tuple[str, str, str]]:
    """(name, group, description) from guests/include/programs.h."""
    text = (guest_build.SOURCE_DIR / "include" / "programs.h").read_text()
    groups = {"GRP_SYSTEM": "system", "GRP_NANO": "nano", "GRP_LMBENCH": "lmbench",
              "GRP_CPU": "cpu", "GRP_FAULT": "fault", "GRP_TEST": "test"}
    rows = re.findall(r'X\(\w+,\s*"([^"]+)",\s*(GRP_\w+),\s*\d+,\s*"([^"]*)"\)', text)
    return [(name, groups[grp], desc) for name, grp, desc in rows]


HELP_TEXT = """commands:
  ls                 list the programs
  run NAME [ITERS]   run a program (or just: NAME [ITERS])
  uptime             time since boot
  stats              kernel counters
  echo TEXT          print TEXT
  help               this text
  exit [STATUS]      leave the shell (and halt)
lines tagged [timing] depend on the machine's speed""".split("\n")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_shell_session(platform, images):
    script = (b"help\nls\nhello\nsieve 2\nrun crc32 3\r\nfault-div\nnosuch\n"
              b"echo  two  spaces\nuptime\nstats\nab\x7fc\nexit 5\n")
    out, status = run_platform(platform, images["kernel"], "", stdin=script)
    table = _program_table()
    assert len(table) == 29 and table[0][0] == "init"
    expected = [BANNER, "ringvisor shell: type help", "$ help", *HELP_TEXT, "$ ls"]
    expected += [f"  {n:<11} {g:<8} {d}" for n, g, d in table if n != "init"]
    expected += [
        "$ hello", "hello from pid 2",
        "$ sieve 2", result_line("sieve", 2, ref_sieve(2)),
        "$ run crc32 3", result_line("crc32", 3, ref_crc32(3)),
        "$ fault-div", "fault-div: dividing by zero",
        "KILL",
        "sh: fault-div exited with status 128",
        "$ nosuch", "sh: unknown command or program 'nosuch' (try help)",
        "$ echo  two  spaces", "two  spaces",
        "$ uptime",
        "$ stats",
        "$ ab\b \bc", "sh: unknown command or program 'ac' (try help)",
        "$ exit 5", "kernel: halt (status 5)", "",
    ]
    lines = untagged(out)
    assert len(lines) == len(expected), out
    for line, want in zip(lines, expected):
        if want == "KILL":
            assert re.fullmatch(r"kernel: pid 5 \(fault-div\) killed: divide error, "
                                r"eip 0x[0-9a-f]{8}", line), line
        else:
            assert line == want
    assert re.search(r"^\[timing\] uptime: \d+\.\d{3} s$", out, re.M)
    assert re.search(r"^\[timing\] ticks \d+ at 100 Hz", out, re.M)
    assert status == 5


@pytest.mark.parametrize("platform", PLATFORMS)
def test_shell_long_input(platform, images):
    """More input than the kernel's 1 KiB ring holds arrives at once: flow
    control keeps every byte."""
    lines = [f"echo line {i:02d} " + "x" * 40 for i in range(60)]
    script = "".join(f"{line}\n" for line in lines) + "exit\n"
    assert len(script) > 3000
    out, status = run_platform(platform, images["kernel"], "", stdin=script.encode())
    expected = [BANNER, "ringvisor shell: type help"]
    for line in lines:
        expected += [f"$ {line}", line[5:]]
    expected += ["$ exit", "kernel: halt (status 0)", ""]
    assert untagged(out) == expected
    assert status == 0


CROSS_CHECK_CMDLINES = [
    "run=all-cpu iters=2",
    "run=syscall:500,in:500,crwr:500,callret:500,pgfault:50,divzero:100,ptemod:500",
    "run=null:500,ctxsw:50,forkwait:4,pagefault:32,selftest",
    "run=all-fault,hello",
    "run=panic",
    "run=null:50,ctxsw:10,forkwait:2,hello gdt=shared",
]


_qemu_reference: dict[str, tuple[str, int]] = {}


@pytest.mark.parametrize("cmdline", CROSS_CHECK_CMDLINES)
@pytest.mark.parametrize("platform", RINGVISOR_PLATFORMS)
def test_same_output_as_qemu(platform, images, cmdline):
    """ringvisor prints exactly what QEMU prints, [timing] lines aside."""
    if QEMU is None:
        pytest.skip("qemu-system-i386 is not installed")
    if cmdline not in _qemu_reference:          # one QEMU run for both engines
        _qemu_reference[cmdline] = run_platform("qemu", images["kernel"], cmdline)
    q_out, q_status = _qemu_reference[cmdline]
    r_out, r_status = run_platform(platform, images["kernel"], cmdline)
    assert untagged(r_out) == untagged(q_out)
    assert r_status == q_status


_opt_builds: dict[str, dict[str, Path]] = {}
_opt_reference: dict[str, tuple[str, int]] = {}


@pytest.fixture(scope="session")
def build_at(tmp_path_factory):
    """Images built at another optimisation level (built once per session)."""
    def get(opt: str) -> dict[str, Path]:
        # Only the two images the test boots: the whole set (pvcc included) is
        # built once, at -O2, by the ``images`` fixture.
        if opt not in _opt_builds:
            out = tmp_path_factory.mktemp(f"guest-O{opt}")
            _opt_builds[opt] = {name: guest_build.build_image(name, out, opt=opt)
                                for name in ("kernel", "bench-dhrystone")}
        return _opt_builds[opt]
    return get


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("opt", ["0", "3"])
def test_other_optimisation_levels(platform, images, build_at, opt):
    """gcc's -O0 and -O3 output behaves like the -O2 build (the CPU must run
    whatever gcc emits)."""
    built = build_at(opt)
    cmdline = ("run=sieve:1,crc32:2,matmul:1,qsort:1,strings:2,dhrystone:20,selftest,"
               "syscall:100,divzero:10,ctxsw:20,forkwait:3,pagefault:16")
    # the -O2 build's output on ringvisor's translator, for every platform: the -O2 image
    # prints the same on QEMU and on both engines (test_same_output_as_qemu), so one
    # reference run is enough, and each platform's -O0/-O3 run is held to it
    if cmdline not in _opt_reference:
        _opt_reference[cmdline] = run_platform("ringvisor", images["kernel"], cmdline)
    ref_out, ref_status = _opt_reference[cmdline]
    out, status = run_platform(platform, built["kernel"], cmdline)

    def norm(text: str) -> list[str]:
        # Code addresses (in the kill message) differ between builds.
        return [re.sub(r"0x[0-9a-f]{8}", "ADDR", line) for line in untagged(text)]
    assert norm(out) == norm(ref_out)
    assert "selftest: 21 checks, 0 failed" in out
    assert status == ref_status == 0
    bench_out, bench_status = run_platform(platform, built["bench-dhrystone"], "iters=77")
    assert untagged(bench_out) == [result_line("dhrystone", 77, ref_dhrystone(77)), ""]
    assert bench_status == 0


@pytest.mark.parametrize("mode", ["trapemu", "bt"])
def test_the_gdt_has_a_page_of_its_own(images, mode):
    """The kernel's GDT is alone on its page (as Linux's gdt_page): no store of a system
    call or a context switch reaches it, so no monitor traps one.  With gdt=shared it sits
    beside the counters, whose every store reaches it (the monitors' adaptive case)."""
    from elftools.elf.elffile import ELFFile

    from ringvisor.hw.machine import read_image
    from ringvisor.vmm import create_vm
    with open(images["kernel"], "rb") as f:
        syms = {s.name: s for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols()}
    page, shared = syms["gdt_page"], syms["gdt_shared"]
    assert page["st_value"] % 4096 == 0 and page["st_size"] == 4096
    assert shared["st_value"] >> 12 == syms["kstats"]["st_value"] >> 12
    gdt_traps = {}
    for layout in ("page", "shared"):
        m, mon = create_vm(read_image(images["kernel"]), mode,
                           f"run=syscall:300,ctxsw:20 gdt={layout}", 32, output=lambda b: None)
        assert m.run(RINGVISOR_MAX_INSTRUCTIONS).reason == "exit"
        gdt_traps[layout] = sum(n for k, n in mon.traps.items() if "GDT" in k)
        gdt_traps[layout] += sum(mon.gdt.stats[k] for k in ("gdt_write_faults",
                                                            "gdt_frames_relaxed"))
    assert gdt_traps["page"] == 0 and gdt_traps["shared"] > 300, gdt_traps
