"""The toolstack (policy): Domain 0's user space, in Python, as xend was.

Everything here acts through ``ringvisor.hypervisor.interface`` (hypercalls
with Domain 0's identity, on memory of its own) and knows the hypervisor only
by its public ABI (``ringvisor.abi``): ``xc`` wraps the hypercalls (libxc),
``builder`` builds a domain from a kernel image (libxc's domain builder),
``config`` reads xl.cfg files, ``xenstore`` is xenstored, ``consoled`` is
xenconsoled, ``xl`` is the management logic, ``server`` and ``client`` carry
``ringvisor xl`` commands to it.
"""
