"""The security module: a FLASK-style policy checked on every privileged or
inter-domain operation (Xen's XSM with the FLASK module).

Every domain carries a security *type* (``dom0_t``, ``domU_t``, ...).  The
policy is a set of types and ``allow`` rules: *source type* may do
*permissions* of a *class* to *target type*.  Every check names the acting
domain (the subject), the domain acted on (the object, ``xen_t`` for the
hypervisor itself), a class and one permission; what no rule allows is
denied, logged like an AVC record (``avc: denied { pause } for domid=2
target=1 scontext=... tcontext=... tclass=domain``), and the caller gets
``-EACCES`` as FLASK gives it.

The policy language is a small text form of FLASK's type enforcement::

    type dom0_t;                      # a type
    allow dom0_t domU_t:domain { create destroy pause unpause };
    allow domU_t self:event send;     # self: the subject's own domain

Xen compiles its policy with ``checkpolicy``; here the toolstack loads the
text itself (``xsm_op`` ``FLASK_LOAD``), and may load a new one at any time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# The classes and their permissions (a subset of Xen's access_vectors, named as there;
# console and xenstore are ringvisor's, for the services Domain 0 runs).
CLASSES: dict[str, frozenset[str]] = {
    "xen": frozenset({"physinfo", "readconsole", "writeconsole", "getdomaininfo", "sched_id",
                      "heap"}),
    "domain": frozenset({"create", "destroy", "pause", "unpause", "getdomaininfo",
                         "setvcpucontext", "getvcpucontext", "getvcpuinfo", "max_vcpus",
                         "setdomainmaxmem", "setdomainhandle", "scheduler", "shutdown",
                         "settime", "setvcpuaffinity", "getvcpuaffinity"}),
    "mmu": frozenset({"map_read", "map_write", "physmap", "adjust", "stat"}),
    "event": frozenset({"bind", "send", "status", "create"}),
    "grant": frozenset({"map_read", "map_write", "unmap", "copy", "setup", "query"}),
    "console": frozenset({"read", "write"}),
    "xenstore": frozenset({"read", "write", "introduce"}),
    "security": frozenset({"load_policy", "setenforce", "compute_av"}),
}

DEFAULT_POLICY = Path(__file__).with_name("default.policy")
CONTEXT = "system_u:system_r:{}"


class PolicyError(Exception):
    """A policy text that does not parse (one line: where and why)."""


@dataclass
class Policy:
    types: set[str] = field(default_factory=set)
    rules: set[tuple[str, str, str, str]] = field(default_factory=set)   # (src, tgt, class, perm)
    text: str = ""

    def allows(self, src: str, tgt: str, cls: str, perm: str, same: bool) -> bool:
        return (src, tgt, cls, perm) in self.rules or \
            (same and (src, "self", cls, perm) in self.rules)


_TOKEN = re.compile(r"\s*(#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|[{};:]|\S)")


def parse(text: str, name: str = "policy") -> Policy:
    """Parse a policy; PolicyError names the line and the problem."""
    tokens: list[tuple[str, int]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for m in _TOKEN.finditer(line):
            t = m.group(1)
            if not t.startswith("#"):
                tokens.append((t, lineno))
    p = Policy(text=text)
    i = 0

    def take(what: str) -> tuple[str, int]:
        nonlocal i
        if i >= len(tokens):
            raise PolicyError(f"{name}: unexpected end of policy, expected {what}")
        tok = tokens[i]
        i += 1
        return tok

    def ident(what: str) -> tuple[str, int]:
        t, ln = take(what)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t):
            raise PolicyError(f"{name}:{ln}: expected {what}, found {t!r}")
        return t, ln

    def expect(sym: str) -> None:
        t, ln = take(f"'{sym}'")
        if t != sym:
            raise PolicyError(f"{name}:{ln}: expected '{sym}', found {t!r}")

    while i < len(tokens):
        word, ln = ident("'type' or 'allow'")
        if word == "type":
            t, _ = ident("a type name")
            p.types.add(t)
            expect(";")
        elif word == "allow":
            src, ln = ident("a source type")
            tgt, _ = ident("a target type")
            expect(":")
            cls, cln = ident("a class")
            if cls not in CLASSES:
                raise PolicyError(f"{name}:{cln}: unknown class {cls!r} "
                                  f"(known: {', '.join(sorted(CLASSES))})")
            perms = []
            t, pln = take("a permission or '{'")
            if t == "{":
                while True:
                    t, pln = take("a permission or '}'")
                    if t == "}":
                        break
                    perms.append((t, pln))
            else:
                perms.append((t, pln))
            expect(";")
            for perm, pln in perms:
                if perm not in CLASSES[cls]:
                    raise PolicyError(f"{name}:{pln}: class {cls} has no permission {perm!r}")
            for ty in (src, tgt):
                if ty != "self" and ty not in p.types:
                    raise PolicyError(f"{name}:{ln}: type {ty!r} is not declared")
            for perm, _ in perms:
                p.rules.add((src, tgt, cls, perm))
        else:
            raise PolicyError(f"{name}:{ln}: expected 'type' or 'allow', found {word!r}")
    for t in ("xen_t", "dom0_t", "domU_t"):
        if t not in p.types:
            raise PolicyError(f"{name}: the policy must declare type {t}")
    return p


def default_policy() -> Policy:
    return parse(DEFAULT_POLICY.read_text(), DEFAULT_POLICY.name)


class Denied(Exception):
    """The policy refused an operation (the caller gets -EACCES)."""


class SecurityModule:
    """The checks, the loaded policy and the AVC denial log."""

    def __init__(self, log) -> None:
        self.policy = default_policy()
        self.enforcing = True
        self.log = log                       # the hypervisor console's printk
        self.denials = 0
        self.checks = 0

    def load(self, text: str, name: str = "policy") -> None:
        self.policy = parse(text, name)
        self.log(f"xsm: loaded a policy of {len(self.policy.types)} types and "
                 f"{len(self.policy.rules)} rules")

    def check(self, subject, target, cls: str, perm: str) -> None:
        """Raise Denied unless ``subject`` may ``perm`` (of ``cls``) on ``target``
        (a domain, or None for the hypervisor itself)."""
        assert perm in CLASSES[cls], (cls, perm)
        self.checks += 1
        ttype = "xen_t" if target is None else target.ssid
        same = target is subject
        if self.policy.allows(subject.ssid, ttype, cls, perm, same):
            return
        self.denials += 1
        tdom = "xen" if target is None else target.domid
        self.log(f"avc:  denied  {{ {perm} }} for domid={subject.domid} target={tdom} "
                 f"scontext={CONTEXT.format(subject.ssid)} tcontext={CONTEXT.format(ttype)} "
                 f"tclass={cls}")
        if self.enforcing:
            raise Denied(f"{cls} {perm}")

    def allowed(self, subject_type: str, target_type: str, cls: str, perm: str) -> bool:
        """FLASK_ACCESS: does the policy allow it (no log, no exception)?"""
        return self.policy.allows(subject_type, target_type, cls, perm,
                                  subject_type == target_type)
