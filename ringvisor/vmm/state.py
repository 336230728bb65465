"""A monitor's state as data (the protocol of ``ringvisor.lifecycle.protocol``).

Every attribute of a monitor, and of the parts it is built of, is of one of
three kinds, declared on its class:

``STATE``
    saved and restored: the virtual CPU, the pending virtual interrupts, the
    guest's view of the PIC, event channels, timers, trap table, callbacks,
    the shadow page tables' and the translation cache's bookkeeping (their
    contents live in the monitor's region of machine memory, which is saved
    with the rest of RAM), the counters ``--stats`` reports;
``WIRING``
    references to the machine and configuration, which the constructor sets up
    again on the restored machine;
``TRANSIENT``
    meaningful only inside one entry into the monitor (the interrupt frame, the
    STI shadow of an emulated STI): a VM is saved between instructions, never
    inside an entry.

``tests/test_lifecycle_state.py`` checks that every attribute is declared, so
a monitor someone extends with an attribute nobody saves fails the suite.

Why the shadow page tables and the translation cache are kept rather than
rebuilt: a miss in either is a trap into the monitor, which retires an
instruction of virtual time the guest can read with RDTSC.  A restore that
dropped them would change the guest's ``[timing]`` figures and move its timer
interrupts; keeping them makes the restored run identical to the
uninterrupted one.  What *is* dropped is the host's: the CPU's TLB, its code
cache of translated Python, and the machine's decode caches.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, fields, is_dataclass


def declared(cls) -> set[str]:
    return set(getattr(cls, "STATE", ())) | set(getattr(cls, "WIRING", ())) | \
        set(getattr(cls, "TRANSIENT", ()))


def undeclared(obj) -> set[str]:
    """Attributes of ``obj`` that are neither state, wiring nor transient."""
    return set(vars(obj)) - declared(type(obj))


def _plain(v):
    if hasattr(v, "get_state") and not isinstance(v, type):
        return v.get_state()
    if is_dataclass(v) and not isinstance(v, type):
        return asdict(v)
    if isinstance(v, Counter):
        return dict(v)
    if isinstance(v, dict):
        return dict(v)
    if isinstance(v, (set, frozenset)):
        return set(v)
    if isinstance(v, list):
        return list(v)
    return v


class View:
    """An object seen through some of its fields only (a subclass's ``STATE``): what
    :func:`get_attrs` and :func:`set_attrs` read and write of it (a part of a monitor's
    state that is saved one way, the rest another: ``hypervisor/domsave.py``)."""

    STATE: tuple = ()

    def __init__(self, obj) -> None:
        object.__setattr__(self, "_obj", obj)

    def __getattr__(self, name):
        return getattr(self._obj, name)

    def __setattr__(self, name, value) -> None:
        setattr(self._obj, name, value)


def get_attrs(obj) -> dict:
    """``{name: plain value}`` for each name in the class's ``STATE``."""
    return {n: _plain(getattr(obj, n)) for n in type(obj).STATE}


def set_attrs(obj, state: dict) -> None:
    """Load what :func:`get_attrs` gave, in place where others hold a reference."""
    for n in type(obj).STATE:
        v = state[n]
        cur = getattr(obj, n)
        if hasattr(cur, "set_state") and not isinstance(cur, type):
            cur.set_state(v)
        elif is_dataclass(cur) and not isinstance(cur, type):
            for f in fields(cur):          # (a field newer than the image keeps its default)
                if f.name in v:
                    setattr(cur, f.name, _like(getattr(cur, f.name), v[f.name]))
        elif isinstance(cur, (dict, set)):
            cur.clear()
            cur.update(v)
        elif isinstance(cur, list):
            cur[:] = v
        else:
            setattr(obj, n, _like(cur, v))


def _like(cur, v):
    """``v`` (from plain data) in the type ``cur`` had."""
    if isinstance(cur, tuple) and isinstance(v, list):
        return tuple(v)
    if isinstance(cur, bool):
        return bool(v)
    return v
