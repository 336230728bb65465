"""Xen's public ABI as ringvisor implements it: numbers and structures, as data.

The contract between para-virtual guests, the hypervisor and the toolstack
(as Xen's ``xen/include/public`` is): every layer above imports it, and it
imports nothing of ringvisor.

- ``cstruct``: the structure description (offsets, packing, C definitions);
- ``xen``: the guest's hypercall interface (xen.h, event channels, sched,
  vcpu, callbacks, physdev, version, errno) and ringvisor's fixed addresses;
- ``control``: domctl, sysctl, XSM/FLASK (the toolstack's interface);
- ``grant``: grant tables v1 and memory_op;
- ``rings``: the xenstore wire protocol and the console ring;
- ``blkif``: the block split driver's ring and requests;
- ``header``: the generated C header for guests.

Everything is re-exported here: ``from ringvisor.abi import SHARED_INFO, Hypercall``.
"""

from .blkif import *  # noqa: F401,F403
from .control import *  # noqa: F401,F403
from .cstruct import *  # noqa: F401,F403
from .grant import *  # noqa: F401,F403
from .rings import *  # noqa: F401,F403
from .xen import *  # noqa: F401,F403
from .header import CONSTANT_GROUPS, SINGLE_CONSTANTS, STRUCTS, c_constants, c_header  # noqa: F401,E402
