"""Reading and tabulating the output of the sensitive-instruction probe.

The ``probe`` guest image (``guests/probe/``, after Robin & Irvine, USENIX
Security 2000) runs each probe once in ring 0 and once in ring 3 and prints

    probe NAME kernel=VALUE user=VALUE
    ...
    probe done

:func:`parse` turns that into ``{NAME: (kernel, user)}``; :func:`table` lays
out the results of several machines or monitors side by side (``native``,
``trapemu``, ``bt``, ...), marking every value that differs from the native
machine's.  Pure functions: nothing here runs a guest.
"""

from __future__ import annotations

import re

# The probes, in the order the image runs them, with what each one shows.
SENSITIVE: list[tuple[str, str]] = [
    ("SGDT", "store GDTR: base/limit of the real GDT, readable in ring 3"),
    ("SIDT", "store IDTR: base/limit of the real IDT, readable in ring 3"),
    ("SLDT", "store the LDT selector"),
    ("STR", "store the task register selector"),
    ("SMSW", "store CR0 bits 0-15 (PE, MP, EM, TS, ET, NE), not privileged"),
    ("PUSHF", "EFLAGS as pushed: IF and IOPL (kernel after cli)"),
    ("POPF", "IF after popf clearing IF, then after popf setting IF (ignored at CPL > IOPL)"),
    ("LAR", "access rights of 0x08 / 0x1b (ZF=0: not visible at this CPL)"),
    ("LSL", "segment limit of 0x10 / 0x23 (ZF=0: not visible at this CPL)"),
    ("VERR", "is 0x08 / 0x10 readable at this CPL"),
    ("VERW", "is 0x10 / 0x23 writable at this CPL"),
    ("PUSH_CS", "push %cs: the selector, its RPL is the CPL"),
    ("PUSH_SS", "push %ss: the selector"),
    ("MOV_CS", "mov %cs,%ax: the selector, its RPL is the CPL"),
    ("MOV_SS", "mov %ss,%ax: the selector"),
    ("MOV_DS", "mov %ds,%ax: the selector"),
    ("FAR_CALL", "lcall to the code selector of its own ring (0x08 / 0x1b), lret back"),
    ("FAR_JMP", "ljmp to the code selector of its own ring (0x08 / 0x1b)"),
    ("FAR_RET", "lret to a pushed 0x08 / 0x1b"),
    ("INT", "int $0x30 (DPL-3 gate): the CS the handler finds in its frame"),
    ("IRET", "IF after iret to the same ring with IF clear, then with IF set"),
    ("CLI", "cli: privileged in ring 3 (IOPL 0)"),
    ("HLT", "hlt: privileged in ring 3 (not run in ring 0)"),
]

BASELINE = "native"
MARK = "*"

_LINE = re.compile(r"probe (\S+) kernel=(\S+) user=(\S+)")
_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def parse(output: str) -> dict[str, tuple[str, str]]:
    """Probe name -> (kernel value, user value), in the order printed.

    Lines that do not start with ``probe`` (a monitor's messages, ``[timing]``
    lines) are ignored.  Raises ValueError on a malformed ``probe`` line, a
    probe reported twice, a line after ``probe done``, or output that never
    reaches ``probe done`` (the guest crashed or was stopped)."""
    results: dict[str, tuple[str, str]] = {}
    done = False
    for number, raw in enumerate(output.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.startswith("probe"):
            continue
        if done:
            raise ValueError(f"line {number}: probe output after 'probe done': {line!r}")
        if line.strip() == "probe done":
            done = True
            continue
        m = _LINE.fullmatch(line.strip())
        if m is None or not _NAME.fullmatch(m.group(1)):
            raise ValueError(f"line {number}: malformed probe line {line!r} "
                             "(expected 'probe NAME kernel=VALUE user=VALUE')")
        name = m.group(1)
        if name in results:
            raise ValueError(f"line {number}: probe {name} reported twice")
        results[name] = (m.group(2), m.group(3))
    if not done:
        last = f" (last probe: {next(reversed(results))})" if results else ""
        raise ValueError(f"probe output is incomplete: no 'probe done' line{last}")
    if not results:
        raise ValueError("probe output has 'probe done' but no probe lines")
    return results


def _order(results: dict[str, dict[str, tuple[str, str]]]) -> list[str]:
    names = [name for name, _ in SENSITIVE]
    known = set(names)
    for parsed in results.values():
        for name in parsed:
            if name not in known:
                known.add(name)
                names.append(name)
    present = {name for parsed in results.values() for name in parsed}
    return [name for name in names if name in present]


def table(results: dict[str, dict[str, tuple[str, str]]], *, describe: bool = True) -> str:
    """A text table: one row per probe, a kernel and a user column per mode.

    ``results`` maps a mode name (``native``, ``trapemu``, ``bt``, ...) to
    :func:`parse` output; the modes appear in its order.  A value that
    differs from the baseline's (the ``native`` mode, or the first one when
    there is no ``native``) is marked with ``*``; a probe a mode did not
    report shows ``-``.  ``describe`` adds a last column saying what each
    probe shows (from :data:`SENSITIVE`)."""
    if not results:
        raise ValueError("no results to tabulate")
    modes = list(results)
    base = BASELINE if BASELINE in results else modes[0]
    descriptions = dict(SENSITIVE)
    names = _order(results)

    header1 = ["probe"]
    header2 = [""]
    for mode in modes:
        header1 += [mode, ""]
        header2 += ["kernel", "user"]
    if describe:
        header1.append("what it shows")
        header2.append("")
    rows = []
    for name in names:
        ref = results[base].get(name)
        row = [name]
        for mode in modes:
            values = results[mode].get(name)
            for i in (0, 1):
                if values is None:
                    row.append("-")
                    continue
                differs = mode != base and (ref is None or values[i] != ref[i])
                row.append(values[i] + (MARK if differs else ""))
        if describe:
            row.append(descriptions.get(name, ""))
        rows.append(row)

    # a mode's two columns are at least as wide as its name
    widths = [max(len(r[i]) for r in [header1, header2] + rows) for i in range(len(header1))]
    for m, mode in enumerate(modes):
        k, u = 1 + 2 * m, 2 + 2 * m
        short = len(mode) - (widths[k] + 2 + widths[u])
        if short > 0:
            widths[u] += short

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    lines = [fmt(header1), fmt(header2)]
    rule = ["-" * w for w in widths]
    if describe:
        rule[-1] = "-" * len(header1[-1])
    lines.append("  ".join(rule))
    lines += [fmt(r) for r in rows]
    lines.append("")
    lines.append(f"legend: {MARK} = differs from {base}; kernel = run in the guest kernel "
                 "(ring 0 natively), user = run in ring 3; - = not reported; "
                 "#GP(xxxx) etc. = the exception raised (error code)")
    return "\n".join(lines) + "\n"


def to_json(results: dict[str, dict[str, tuple[str, str]]], engine: str) -> dict:
    """The probe's results as a ``ringvisor.probe/1`` document (docs/json.md)."""
    if not results:
        raise ValueError("no results to report")
    modes = list(results)
    base = BASELINE if BASELINE in results else modes[0]
    descriptions = dict(SENSITIVE)
    probes = []
    for name in _order(results):
        ref = results[base].get(name)
        cells = {}
        for mode in modes:
            values = results[mode].get(name)
            if values is None:
                cells[mode] = None
                continue
            cells[mode] = {"kernel": values[0], "user": values[1],
                           "differs": mode != base and (ref is None or values != ref)}
        probes.append({"name": name, "description": descriptions.get(name, ""), "results": cells})
    return {"schema": "ringvisor.probe/1", "engine": engine, "baseline": base, "modes": modes,
            "probes": probes}
