"""The state protocol every part of a virtual machine implements (QEMU's vmstate).

A *component* is anything whose state defines a running VM: the CPU, the
clock, each device, each monitor.  It has

    state_name     the name of its section in an image ("cpu", "pic", "uart@0x3f8")
    state_version  the version of its state's layout; raise it when the layout
                   changes, and accept older versions in ``set_state`` if you can
    get_state()    its state as plain data (``codec.py``): no live objects,
                   nothing derived that can be rebuilt (translations, TLBs)
    set_state(s)   take such a state, dropping whatever was derived from the old one

``hw``, ``vmm`` and the hypervisor implement it without importing this
package (it is a duck type, as QEMU's ``VMStateDescription`` is a table the
device supplies); ``lifecycle`` only composes components into images.
Restoring goes in the order ``Machine.components()`` gives.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Stateful(Protocol):
    state_name: str
    state_version: int

    def get_state(self): ...

    def set_state(self, state) -> None: ...


def missing_protocol(obj) -> list[str]:
    """What ``obj`` lacks of the protocol (empty if nothing)."""
    return [a for a in ("state_name", "state_version", "get_state", "set_state")
            if not hasattr(obj, a)]
