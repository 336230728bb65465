"""The mutations of ``badinput`` (the bad-input fuzzer): byte-level damage, and damage
that knows the format -- re-checksummed image sections, JSON state, ELF header and
program-header fields, xl.cfg tokens, command-line options.  Each takes a seeded
``random.Random`` and returns a new input; none reads a clock or the environment."""

from __future__ import annotations

import io
import json
import random
import struct

INTERESTING32 = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x1000, 0xFFFF, 0x10000, 0x7FFFFFFF,
                 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 0x100000, 0xA0000, 0xFFFFF000]
CONFIG_TOKENS = ['"', "'", "[", "]", ",", ";", "#", "=", "\n", " = ", "0x10", "1e3", "16M",
                 "-1", "99999999999999999999", "''", '""', "[]", "[,]", "None", "True",
                 "memory", "vcpus", "maxmem", "name", "kernel", "disk", "cpus", "cap",
                 "unknown_key", "vif", "ramdisk", "\\", "\x00", "\t", "é", "(1,2)", "{}",
                 "'a' 'b'", "\"\"\"x\"\"\"", "1_0", "0o7", "0b1", "nan", "-0", "8", "9"]

BAD_VALUES = ["", "-1", "0", "0x", "1e9", "99999999999999999999", "abc", "3.5", "-",
              "--", "4K", "1.5G", "/nonexistent/dir/file", "/", ".", "tcp::0", "unix:",
              "file:", "file:/nonexistent/x", "null,null", "x" * 300, "é", " ", "0x7fffffff"]


def mutate_bytes(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.randrange(7)
        n = len(b)
        if n == 0:
            b += rng.randbytes(rng.randint(1, 64))
        elif op == 0:                                            # truncate
            del b[rng.randrange(n):]
        elif op == 1:                                            # flip bits
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 2:                                            # an interesting u32
            at = rng.randrange(n) & ~3
            b[at:at + 4] = struct.pack("<I", rng.choice(INTERESTING32))
        elif op == 3:                                            # splice another input
            o = rng.choice(others) or b"x"
            at, src = rng.randrange(n), rng.randrange(len(o))
            b[at:at + rng.randint(1, 256)] = o[src:src + rng.randint(1, 256)]
        elif op == 4:                                            # grow: append junk
            b += rng.randbytes(rng.randint(1, 4096))
        elif op == 5:                                            # delete a chunk
            at = rng.randrange(n)
            del b[at:at + rng.randint(1, 64)]
        else:                                                    # duplicate a chunk
            at = rng.randrange(n)
            b[at:at] = b[at:at + rng.randint(1, 64)]
    return bytes(b)


def _junk_json(rng: random.Random):
    return rng.choice(["x", -1, [None], {"y": 1}, 2 ** 80, None, True, 1.5, "", [], {},
                       {"$b": "!!"}, {"$d": 5}, {"$s": [[]]}, 2 ** 31, -(2 ** 63)])


def _mutate_json(rng: random.Random, value):
    """One value somewhere inside ``value`` replaced, removed or added."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        k = rng.choice(sorted(value, key=str))
        out = dict(value)
        r = rng.random()
        if r < 0.15:
            del out[k]
        elif r < 0.25:
            out["zz_unknown"] = _junk_json(rng)
        elif r < 0.6:
            out[k] = _junk_json(rng)
        else:
            out[k] = _mutate_json(rng, value[k])
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        out = list(value)
        i = rng.randrange(len(out))
        r = rng.random()
        if r < 0.2:
            del out[i]
        elif r < 0.3:
            out.append(out[i])
        else:
            out[i] = _mutate_json(rng, out[i]) if rng.random() < 0.6 else _junk_json(rng)
        return out
    if isinstance(value, bool) or value is None:
        return _junk_json(rng)
    if isinstance(value, int):
        return rng.choice([value + 1, value - 1, -value, value ^ (1 << rng.randrange(32)),
                           rng.choice(INTERESTING32), 2 ** 64, -1])
    if isinstance(value, str):
        return rng.choice(["", value + "x", value[:-1], "é" * 3, "\n"])
    return _junk_json(rng)


def mutate_image(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    """Re-checksummed forgeries (what a CRC cannot catch) or raw byte damage."""
    from ringvisor.lifecycle import stream
    if rng.random() < 0.35:
        return mutate_bytes(rng, data, others)
    secs = stream.read_sections(data)
    tail = data[_consumed(data):]                 # a mapped image's pages follow END
    i = rng.randrange(len(secs))
    s = secs[i]
    op = rng.randrange(8)
    if op == 0:
        secs[i] = stream.Section(s.kind, s.name, rng.choice([0, s.version + 1, 2 ** 32 - 1]),
                                 s.payload)
    elif op == 1:
        secs[i] = stream.Section(s.kind, rng.choice(["", s.name + "x", "cpu", "ram", "vm"]),
                                 s.version, s.payload)
    elif op == 2:
        del secs[i]
    elif op == 3:
        secs.insert(i, s)
    elif op == 4 and s.payload[:1] in (b"{", b"["):
        try:
            v = json.loads(s.payload)
        except ValueError:
            v = None
        if v is not None:
            for _ in range(rng.randint(1, 3)):
                v = _mutate_json(rng, v)
            secs[i] = stream.Section(s.kind, s.name, s.version,
                                     json.dumps(v, sort_keys=True).encode())
    elif op == 5 and s.kind == stream.IMAGE:      # a recording's checkpoint: recurse
        secs[i] = stream.Section(s.kind, s.name, s.version,
                                 mutate_image(rng, s.payload, others))
    elif op == 6:
        secs[i] = stream.Section(rng.choice(sorted(stream.KIND_NAMES)), s.name, s.version,
                                 s.payload)
    else:                                         # binary payload damage, re-checksummed
        secs[i] = stream.Section(s.kind, s.name, s.version,
                                 mutate_bytes(rng, s.payload, others))
    out = data[:20] + b"".join(stream.pack_section(x.kind, x.name, x.version, x.payload)
                               for x in secs) + stream.pack_end(len(secs))
    return out + tail


def _consumed(data: bytes) -> int:
    from ringvisor.lifecycle import stream
    f = io.BytesIO(data)
    r = stream.SectionReader(f)
    for _ in r:
        pass
    return f.tell()


ELF_FIELDS = {   # offset, struct format: the ELF32 header (System V ABI, ch. 4)
    "ei_class": (4, "B"), "ei_data": (5, "B"), "ei_version": (6, "B"), "e_type": (16, "<H"),
    "e_machine": (18, "<H"), "e_version": (20, "<I"), "e_entry": (24, "<I"),
    "e_phoff": (28, "<I"), "e_shoff": (32, "<I"), "e_flags": (36, "<I"),
    "e_ehsize": (40, "<H"), "e_phentsize": (42, "<H"), "e_phnum": (44, "<H"),
    "e_shentsize": (46, "<H"), "e_shnum": (48, "<H"), "e_shstrndx": (50, "<H")}
PHDR_FIELDS = ["p_type", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_flags",
               "p_align"]


def mutate_elf(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    if rng.random() < 0.3 or len(data) < 52:
        return mutate_bytes(rng, data, others)
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2))):
        r = rng.random()
        if r < 0.3:
            off, fmt = ELF_FIELDS[rng.choice(sorted(ELF_FIELDS))]
            size = struct.calcsize(fmt)
            v = rng.choice(INTERESTING32 + [2, 3, 62]) & ((1 << (8 * size)) - 1)
            struct.pack_into(fmt, b, off, v)
        elif r < 0.85:                    # a program-header field
            phoff, phnum = struct.unpack_from("<I", b, 28)[0], struct.unpack_from("<H", b, 44)[0]
            if phnum == 0 or phoff + 32 * phnum > len(b):
                continue
            ph = phoff + 32 * rng.randrange(phnum)
            field = rng.randrange(8)
            old = struct.unpack_from("<I", b, ph + 4 * field)[0]
            if field in (4, 5) and rng.random() < 0.5:       # huge sizes
                v = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, old * 4096, old + 0x1000000])
            elif field in (2, 3) and phnum > 1 and rng.random() < 0.5:   # overlap another
                other = phoff + 32 * rng.randrange(phnum)
                v = struct.unpack_from("<I", b, other + 4 * field)[0] + rng.choice([0, 1, 0x800])
            else:
                v = rng.choice(INTERESTING32 + [old ^ (1 << rng.randrange(32))])
            struct.pack_into("<I", b, ph + 4 * field, v & 0xFFFFFFFF)
        else:                             # section-header garbage, or an entry elsewhere
            shoff = struct.unpack_from("<I", b, 32)[0]
            if 0 < shoff < len(b):
                at = shoff + rng.randrange(max(1, min(len(b) - shoff, 400)))
                b[at:at + 8] = rng.randbytes(8)
            else:
                struct.pack_into("<I", b, 24, rng.choice(INTERESTING32))
    return bytes(b)


def mutate_config(rng: random.Random, text: str, others: list[str]) -> str:
    if rng.random() < 0.15:
        return mutate_bytes(rng, text.encode(), [o.encode() for o in others]).decode(
            "utf-8", "replace")
    lines = text.split("\n")
    for _ in range(rng.choice((1, 1, 2, 3))):
        r = rng.random()
        i = rng.randrange(len(lines))
        if r < 0.15:
            del lines[i]
            lines = lines or [""]
        elif r < 0.3:
            lines.insert(i, lines[i])                           # a duplicate key
        elif r < 0.45:
            lines.insert(i, rng.choice(rng.choice(others).split("\n")))   # splice
        else:
            line = lines[i]
            at = rng.randrange(len(line) + 1)
            tok = rng.choice(CONFIG_TOKENS)
            if rng.random() < 0.5 and line:
                end = min(len(line), at + rng.randint(1, 8))
                line = line[:at] + tok + line[end:]
            else:
                line = line[:at] + tok + line[at:]
            lines[i] = line
    return "\n".join(lines)


def mutate_argv(rng: random.Random, argv: list[str]) -> list[str]:
    a = list(argv)
    for _ in range(rng.choice((1, 1, 2))):
        r = rng.random()
        i = rng.randrange(len(a))
        if r < 0.5 and i > 0:
            a[i] = rng.choice(BAD_VALUES)
        elif r < 0.65 and i > 0:
            del a[i]
        elif r < 0.8:
            a.insert(i + 1, a[i])
        else:
            a.insert(rng.randrange(1, len(a) + 1), rng.choice(
                ["--mode", "--engine", "--smp", "--mem", "--serial", "--pace", "--stats",
                 "--mapped", "--lazy", "--goto", "--stop-at", "--save", "--record",
                 "--disk", "--virtio-disk", "--virtio-console", "--bios", "--trace", "--json",
                 "--append", "--module", "--max-instructions", "--checkpoint-every"]))
    return a
