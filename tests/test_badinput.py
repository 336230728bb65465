"""Bad input is one clear line and exit status 2, never a traceback, and loses nothing a
user saved: the mutation fuzzer (``ringvisor/tools/badinput.py``) on fixed seeds, and
the bugs it found, each pinned by its own case.

Many seeds: ``python -m ringvisor.tools.badinput --seeds 2000`` (docs/debugging.md)."""

from __future__ import annotations

import json
import struct

import pytest

from ringvisor.lifecycle import codec, stream
from ringvisor.lifecycle.ram import encode_pages
from ringvisor.tools import badinput
from ringvisor.toolstack.config import ConfigFileError, DomainConfig, parse
from ringvisor.toolstack.saverestore import DOMAIN_VERSION, parse_stream
from ringvisor.toolstack.xl import XlError

# cases per target: a few seconds of CPU in all (the corpus and the Xen host are made once)
SEEDS = {"config": 300, "elf": 15, "image": 12, "mapped": 6, "recording": 8, "node": 8,
         "argv": 20, "domain": 8, "migration": range(4), "bios": range(1, 4), "pvcc": 1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return badinput.make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    return badinput.XenHost(tmp_path_factory.mktemp("xen"))


@pytest.mark.parametrize("target", [t for t in badinput.TARGETS if t not in ("domain", "xl")])
def test_mutated_inputs_are_one_clear_line(corpus, target):
    seeds = SEEDS[target] if isinstance(SEEDS[target], range) else range(SEEDS[target])
    found = [badinput.run_case(corpus, target, seed) for seed in seeds]
    assert [str(f) for f in found if f] == []


def test_mutated_domains_are_one_clear_line_and_leave_nothing(corpus, host):
    found = [badinput.run_domain_case(corpus, host, seed) for seed in range(SEEDS["domain"])]
    assert [str(f) for f in found if f] == []


def test_the_fuzzer_sees_what_it_must_flag(corpus, tmp_path, monkeypatch):
    """The oracle itself: a traceback, a second line and a clobbered file are findings."""
    import ringvisor.cli as cli
    saved = tmp_path / "saved.rv"
    saved.write_bytes(b"mine")

    def boom(args):
        raise KeyError("x")

    def two_lines(args):
        import sys
        print("ringvisor: one\nringvisor: two", file=sys.stderr)
        return 2

    def clobber(args):
        import sys
        saved.write_bytes(b"half")
        print("ringvisor: no", file=sys.stderr)
        return 2

    for fn, what in ((boom, "traceback"), (two_lines, "not one line"),
                     (clobber, "saved file changed")):
        monkeypatch.setitem(cli.COMMANDS, "snapshot-list", fn)
        f = badinput.check_cli("t", 0, ["snapshot-list"], tmp_path, saved)
        assert f is not None and what in f.what, (what, f)
        saved.write_bytes(b"mine")


# -- the bugs it found --------------------------------------------------------------------
def test_a_description_of_the_wrong_type_is_a_corrupt_image(corpus, tmp_path, capsys):
    """snapshot-create printed the node with an ``icount`` that was a JSON object."""
    secs = stream.read_sections(corpus.image)
    meta = next(i for i, s in enumerate(secs) if s.kind == stream.META)
    for key, value in (("icount", {"y": 1}), ("machine_mb", "32"), ("icount", -5),
                       ("virtio_console", 1), ("mode", None)):
        info = json.loads(secs[meta].payload)
        info[key] = value
        forged = list(secs)
        forged[meta] = stream.Section(stream.META, "vm", secs[meta].version,
                                      json.dumps(info).encode())
        (tmp_path / "f.rv").write_bytes(stream.pack_image(forged))
        for argv in (["snapshot-create", "x", "--from", str(tmp_path / "f.rv"), "--store",
                      str(tmp_path / "store")], ["restore", str(tmp_path / "f.rv")]):
            status, err, tb = badinput.run_cli(argv)
            assert tb is None and status == 2, (key, err, tb)
            assert err.count("\n") == 1 and f"corrupt description ({key}" in err, err


def _domain_stream(**changes) -> bytes:
    cfg = DomainConfig(name="a", kernel="kernel-pv", memory=8).to_dict()
    meta = {"version": DOMAIN_VERSION, "config": cfg, "uuid": "f1f43083-f9ae-4396-9898-43a15c58dced",
            "frames": [[0, 2050]], "max_pages": 2050, "console_port": 1, "store_port": 2,
            "xenstore": {}}
    for k, v in changes.items():
        if k.startswith("config_"):
            cfg[k[7:]] = v
        else:
            meta[k] = v
    memory = bytearray(2050 * 4096)
    return b"".join([stream.pack_header(), stream.pack_section(stream.META, "domain", DOMAIN_VERSION,
                                                               codec.encode(meta, "domain")),
                     stream.pack_section(stream.STATE, "context", 1, b"{}"),
                     stream.pack_section(stream.PAGES, "memory", 1, encode_pages(memory, [])),
                     stream.pack_end(3)])


def test_a_domain_stream_is_checked_before_it_is_built():
    """xl restore built the domain from a stream whose xenstore entries were bytes (an
    AttributeError that took ``ringvisor xen`` down with every domain), allocated 4 KiB
    for every frame a forged frame list claimed (2**40: the host ran out of memory) and
    took any configuration values (memory -5, vcpus 100, a name with a slash)."""
    parse_stream(_domain_stream(), "ok")
    bad = [("xenstore", b""), ("frames", [[0, 1 << 40]]), ("frames", [[0, 2051]]),
           ("frames", [[-1, 2]]), ("max_pages", "2050"), ("uuid", "nope"),
           ("config_memory", -5), ("config_vcpus", 100), ("config_name", "a/b"),
           ("config_disks", [{"target": "/x", "format": "qcow2", "vdev": "xvda",
                              "access": "rw"}]),
           ("config_on_crash", "explode"), ("config_cpus", ["99999"]), ("config", [1]),
           ("config_uuid", "nope"), ("config_uuid", 7)]
    for key, value in bad:
        with pytest.raises(stream.BadImage, match="corrupt domain description") as e:
            parse_stream(_domain_stream(**{key: value}), "f.save")
        assert "\n" not in str(e.value)


def test_a_domain_that_cannot_start_is_destroyed(host):
    """A ``cpus =`` naming a CPU this host does not have was refused after the domain was
    built, and the domain stayed, running, with its memory."""
    free = host.hv.frames.nr_free
    cfg = parse('name = "d"\nkernel = "kernel-pv"\nvcpus = 2\ncpus = ["0", "7"]\n', "d.cfg")
    with pytest.raises(XlError, match="not a CPU of this host"):
        host.ts.create(cfg)
    host.settle()
    assert [d for d in host.hv.domains if d != 0] == [] and "d" not in [
        m.name for m in host.ts.managed.values()]
    assert host.hv.frames.nr_free == free


def test_a_configured_uuid_is_the_domains_and_is_unique(host):
    """``uuid =`` was taken and ignored: the domain got a random handle.  It is the
    domain's handle now (xl list -v, its /vm/UUID in xenstore), a second domain asking
    for the same one is refused (they would share that directory), the nil UUID asks
    for a random one as libxl takes it, and a value that is not a UUID is one line."""
    text = 'name = "{}"\nkernel = "kernel-pv"\nmemory = 8\nuuid = "{}"\n'
    given = "5D1C6A62-8B1E-4C2A-9F61-0B7E2D3C4A55"
    cfg = parse(text.format("u", given), "u.cfg")
    assert cfg.uuid == given.lower()
    host.ts.create(cfg)
    try:
        assert {r["name"]: r["uuid"] for r in host.ts.list()}["u"] == given.lower()
        with pytest.raises(XlError, match="a domain with this UUID exists already"):
            host.ts.create(parse(text.format("v", given.lower()), "v.cfg"))
        assert "v" not in [m.name for m in host.ts.managed.values()]
    finally:
        host.ts.destroy("u")
        host.settle()
    assert parse(text.format("n", "00000000-0000-0000-0000-000000000000"), "n.cfg").uuid == ""
    for bad in ("zzz", given[:-1], "{" + given + "}", given.replace("-", "")):
        with pytest.raises(ConfigFileError) as e:
            parse(text.format("b", bad), "b.cfg")
        assert str(e.value) == (f"b.cfg:4: uuid: {bad!r} is not a UUID "
                                "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, hexadecimal)")


def test_a_domain_the_host_cannot_give_is_refused_by_what_it_lacks(host):
    """A seclabel the policy has no type for failed as a toolstack fault (its traceback
    logged, 'the toolstack failed on create'); memory beyond the host's was a bare
    'domctl max_mem: EINVAL' from the builder."""
    text = 'name = "m"\nkernel = "kernel-pv"\n'
    for extra, message in (('seclabel = "system_u:system_r:nosuch_t"\n',
                            "seclabel = 'system_u:system_r:nosuch_t': not a security context "
                            "of the loaded policy"),
                           ("memory = 2048\n", "memory = 2048: more than this host's memory"),
                           ("memory = 8\nmaxmem = 2048\n", "maxmem = 2048: more than"),
                           ("memory = 80\n", "memory = 80: this host has ")):
        with pytest.raises(XlError) as e:
            host.ts.create(parse(text + extra, "m.cfg"))
        assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)
    assert "m" not in [m.name for m in host.ts.managed.values()]


def test_config_syntax_variants_of_xl_cfg(corpus):
    """The corpus's xl.cfg(5) variants all parse, so mutations start from valid files;
    a key that is not one (it ran over a newline inside an open quote and a list that is
    never closed) was printed as it was, newline and all."""
    for text in badinput.CONFIG_VARIANTS:
        parse(text, "v.cfg")
    for text, error in (('name = "a"\nname = "b"\nkernel = "k"\n', "dup.cfg:2: name: given twice"),
                        ('name="a"\non_reboot ["rest\nart"\nkernel="k"\n',
                         "dup.cfg:2: expected 'key = value', found 'on_reboot"),
                        ("mem ory = 3\n", "dup.cfg:1: expected 'key = value'")):
        with pytest.raises(ConfigFileError) as e:
            parse(text, "dup.cfg")
        assert str(e.value).startswith(error) and "\n" not in str(e.value), str(e.value)


def test_mutations_are_deterministic(corpus):
    import random
    from ringvisor.tools.mutate import mutate_elf
    a = mutate_elf(random.Random(5), corpus.elves[0], [corpus.image])
    b = mutate_elf(random.Random(5), corpus.elves[0], [corpus.image])
    assert a == b and a != corpus.elves[0]
    assert struct.unpack_from("<I", corpus.image, 8)[0] == stream.FORMAT_VERSION


def test_a_refused_run_leaves_the_files_it_names_as_they_were(corpus, tmp_path):
    """A run refused for a bad argument had emptied its --trace file already; a --save,
    --record, clone or --output naming a directory failed only after the run, its error
    following the CPU state replay --goto printed, or as a traceback (pvabi-header)."""
    trace = tmp_path / "t.trace"
    trace.write_text("an earlier trace\n")
    status, err, tb = badinput.run_cli(["run", "bench-sieve", "--mem", "9999", "--trace",
                                        str(trace), "--serial", "null"])
    assert (status, tb) == (2, None) and trace.read_text() == "an earlier trace\n"
    new = tmp_path / "new.trace"
    badinput.run_cli(["run", "bench-sieve", "--mem", "9999", "--trace", str(new)])
    assert not new.exists()
    status, err, tb = badinput.run_cli(["run", "bench-sieve", "--mem", "8", "--trace", str(trace),
                                        "--serial", "null", "--max-instructions", "50"])
    assert status == 4 and trace.read_text().startswith("[0] translate"), trace.read_text()[:80]
    rec = tmp_path / "r.rec"
    rec.write_bytes(corpus.recording)
    image = tmp_path / "vm.rv"
    image.write_bytes(corpus.image)
    for argv, error in ((["replay", str(rec), "--goto", "25000", "--save", str(tmp_path)],
                         "--save"),
                        (["run", "bench-sieve", "--stop-at", "100", "--save", str(tmp_path)],
                         "--save"),
                        (["run", "bench-sieve", "--record", str(tmp_path / "no" / "r.rec")],
                         "--record"),
                        (["clone", str(image), str(tmp_path)], "clone"),
                        (["pvabi-header", "--output", str(tmp_path)], "--output"),
                        (["pvabi-header", "--output", ""], "--output"),
                        (["pvabi-header", "--output", "x" * 300], "--output"),
                        (["run", "bench-sieve", "--stop-at", "9", "--save", "x" * 300], "--save"),
                        (["snapshot-list", "--store", "x" * 300], "x"),
                        (["snapshot-list", "--store", str(image)], str(image))):
        status, err, tb = badinput.run_cli(argv)
        assert tb is None and status == 2 and err.count("\n") == 1, (argv, err, tb)
        assert err.startswith(f"ringvisor: {error}"), err


# -- the peers, ROMs and pvcc (tools/badpeers.py and the bios/pvcc targets) ---------------
def test_a_section_claiming_gigabytes_is_never_asked_for_at_once():
    """A migration peer (or a file) whose section claims 2**33 bytes: each read asked for
    all of it (a socket's read allocates what it is asked for), then the rest."""
    import io
    from ringvisor.lifecycle.stream import MIGRATION, READ_CHUNK, SECTION_HEAD, SECTION_TAIL, \
        SectionReader, pack_header

    class Peer(io.RawIOBase):
        def __init__(self, data):
            self.data, self.asked = io.BytesIO(data), []

        def readable(self):
            return True

        def read(self, n=-1):
            self.asked.append(n)
            return self.data.read(n)
    peer = Peer(pack_header(MIGRATION) + SECTION_HEAD.pack(stream.PAGES, 1) + b"p"
                + SECTION_TAIL.pack(1, 1 << 33) + bytes(3 * READ_CHUNK))
    reader = SectionReader(peer, "migration from 127.0.0.1:1")
    with pytest.raises(stream.BadImage, match="truncated"):
        reader.next()
    assert max(peer.asked) == READ_CHUNK


def test_a_description_claiming_exabytes_is_refused_before_memory_is_sized(tmp_path):
    """snapshot-create (and clone) sized the image's memory from its description before
    any check: machine_mb 2**50 was an OverflowError traceback (badinput node seed 9089);
    restore had the check, the image readers did not."""
    from ringvisor.lifecycle.vm import META_VERSION, VmInfo
    for mb in (1 << 50, 0, 4000):
        meta = dict(VmInfo().__dict__, machine_mb=mb)
        path = tmp_path / f"m{mb}.img"
        path.write_bytes(stream.pack_header() + stream.pack_section(
            stream.META, "vm", META_VERSION, codec.encode(meta, "vm")) + stream.pack_end(1))
        for argv in (["snapshot-create", "x", "--from", str(path), "--store",
                      str(tmp_path / "store")],
                     ["clone", str(path), str(tmp_path / "c.img")], ["restore", str(path)]):
            status, err, tb = badinput.run_cli(argv)
            assert tb is None and status == 2, (argv, tb)
            assert err == f"ringvisor: {path}: corrupt description (machine of {mb} MiB at " \
                          "100000000 Hz)\n", err


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_an_image_that_never_ends_is_refused_at_its_bound(device):
    """run KERNEL and run --bios ROM read a device to its end: /dev/zero for ever."""
    for argv, what in ((["run", device, "--mem", "8"], "kernel image is endless or too long, "
                                                       "more than the 8 MiB of guest memory"),
                       (["run", "--bios", device], "ROM image is endless or too long, more "
                                                   "than the 16 MiB a ROM can be")):
        status, err, tb = badinput.run_cli(argv + ["--serial", "null"])
        assert (status, tb) == (2, None) and err == f"ringvisor: {device}: {what}\n", err


def test_pvcc_says_what_the_compiler_said_then_one_line(corpus, tmp_path):
    """gcc's diagnostics quoting a source that is not UTF-8 ended pvcc in a
    UnicodeDecodeError; its errors now come first, as gcc wrote them, then ringvisor's
    one line naming the first error (not a warning before it)."""
    src = tmp_path / "bin.c"
    src.write_bytes(b"\x00\xff\xfe garbage \x80\n")
    status, err, tb = badinput.run_cli(["pvcc", str(src), "-o", str(tmp_path / "k.elf")])
    lines = err.splitlines()
    assert (status, tb) == (2, None) and lines[-1].startswith("ringvisor: gcc failed: ") and \
        "error: stray" in lines[-1] and lines[-1].endswith("more lines above)"), err
    assert not any(line.startswith("ringvisor") for line in lines[:-1])
    assert not (tmp_path / "k.elf").exists()


def test_pvcc_links_a_multiboot_kernel_at_1_mib_without_a_script(tmp_path):
    """Without -T it linked at ld's 0x08048000 (beyond a small machine's RAM); now at
    1 MiB with the .multiboot section first, and boots; a kernel with no Multiboot header
    is refused in one line saying what to pass.  -S of two sources into a file: one line."""
    from elftools.elf.elffile import ELFFile
    src = tmp_path / "k.c"
    src.write_text(badinput.PVCC_SOURCES["ok.c"])           # cli; hlt for ever
    out = tmp_path / "k.elf"
    assert badinput.run_cli(["pvcc", str(src), "--no-runtime", "-o", str(out)])[0] == 0
    with open(out, "rb") as f:
        loads = [s["p_vaddr"] for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD"]
    assert min(loads) == 0x100000, [hex(a) for a in loads]
    status, err, _ = badinput.run_cli(["run", str(out), "--mode", "paravirt", "--mem", "8",
                                       "--max-instructions", "200000", "--serial", "null"])
    assert status == 0 and "halted with interrupts disabled" in err, err    # it booted
    (tmp_path / "n.c").write_text(badinput.PVCC_SOURCES["nomb.c"])
    for argv, what in (([str(tmp_path / "n.c"), "--no-runtime", "-o", str(out)],
                        "without a Multiboot header in its first 8192 bytes: give the kernel one"),
                       (["-S", str(src), str(tmp_path / "n.c"), "-o", str(out)],
                        "cannot make the directory for 2 outputs")):
        before = out.read_bytes()
        status, err, tb = badinput.run_cli(["pvcc", *argv])
        assert (status, tb) == (2, None) and err.count("\n") == 1 and what in err, err
        assert out.read_bytes() == before


def test_xl_against_every_kind_of_broken_host(corpus):
    """No host, a stale socket, a directory where the socket is, a path too long for
    AF_UNIX, a file for a state directory, a host that hangs up, resets, answers half a
    line, garbage or a refusal: one line each (before: tracebacks on a reset, a garbage
    or wrong-shaped answer; nothing at all on a broken pipe)."""
    from ringvisor.tools.badpeers import HOSTS
    seen = set()
    for seed in range(len(HOSTS)):
        assert badinput.run_case(corpus, "xl", seed) is None
        seen.add(HOSTS[seed % len(HOSTS)])
    assert seen == set(HOSTS)


# -- issue 10's list, checked by hand: each one line and exit status 2 ---------------------
def _rv(*args, stdout=None, stdin=None, limit_as=None, timeout=300):
    import os
    import subprocess
    import sys

    def limit():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), RINGVISOR_CACHE_DIR="off")
    return subprocess.run([sys.executable, "-m", "ringvisor", *args], env=env, timeout=timeout,
                          stdout=stdout if stdout is not None else subprocess.PIPE,
                          stderr=subprocess.PIPE, input=stdin,
                          preexec_fn=limit if limit_as else None)


def test_output_that_cannot_be_written_and_memory_the_host_lacks(tmp_path):
    """Standard output on a full device and --trace to one were tracebacks from inside a
    translated block; --mem the host cannot allocate was a MemoryError."""
    with open("/dev/full", "wb") as full:
        r = _rv("run", "bench-sieve", "--mem", "8", "--max-instructions", "3000000", stdout=full)
    assert r.returncode == 2 and r.stderr == \
        b"ringvisor: standard output: cannot write: No space left on device\n", r.stderr
    status, err, tb = badinput.run_cli(["run", "bench-sieve", "--mem", "8", "--trace",
                                        "/dev/full", "--serial", "null",
                                        "--max-instructions", "20000"])
    assert (status, tb) == (2, None) and \
        err == "ringvisor: --trace /dev/full: cannot write: No space left on device\n", err
    r = _rv("run", "bench-sieve", "--mem", "3G", "--serial", "null", limit_as=1 << 31)
    assert r.returncode == 2 and r.stderr == (b"ringvisor: the host cannot give the machine "
                                              b"3072 MiB of memory (give a smaller --mem)\n")


def test_crosscheck_of_a_kernel_that_triple_faults(tmp_path):
    """The interpreter's triple fault escaped crosscheck as a traceback; both engines'
    stops are compared now (an IDT of limit 0: int3 -> #GP -> #DF -> triple fault)."""
    import subprocess
    (tmp_path / "tf.S").write_text(
        '.section .text.mb, "ax"\n.long 0x1BADB002, 0, -(0x1BADB002)\n.text\n.globl _start\n'
        "_start: lidt idtr\n int3\nidtr: .word 0\n .long 0\n")
    (tmp_path / "tf.ld").write_text("SECTIONS { . = 0x100000; .text : { *(.text.mb) *(.text) } }\n")
    subprocess.run(["gcc", "-m32", "-c", str(tmp_path / "tf.S"), "-o", str(tmp_path / "tf.o")],
                   check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-T", str(tmp_path / "tf.ld"), "-e", "_start",
                    str(tmp_path / "tf.o"), "-o", str(tmp_path / "tf.elf")], check=True)
    status, err, tb = badinput.run_cli(["crosscheck", str(tmp_path / "tf.elf"),
                                        "--max-instructions", "1000"])
    assert (status, tb) == (0, None), (err, tb)


def test_a_piped_shell_session_ends_after_its_input():
    """It never ended (the shell waits at its prompt for a next line that cannot come),
    keeping a core busy with virtual time racing: now, once the input has ended, 10 s of
    virtual time halted and silent ends the run, status 0, one line."""
    r = _rv("run", "kernel", stdin=b"echo piped\n")
    assert r.returncode == 0 and b"piped" in r.stdout.split(b"echo piped")[-1], r.stdout[-200:]
    assert r.stderr.strip().splitlines() == [b"ringvisor: the input has ended and the guest "
                                             b"has waited 10 s (virtual time) for more without "
                                             b"writing anything: stopped"], r.stderr
