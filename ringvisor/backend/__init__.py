"""Back-end halves of the split drivers, apart from where they run.

A back-end's protocol logic -- reading a front-end's requests off a shared
ring, checking each against the rules, doing the I/O, writing the responses
-- is the same whether it runs in Domain 0's user space (``ringvisor.toolstack``,
Xen's structure) or inside the hypervisor (``ringvisor.hypervisor``, the
chapter's monolithic structure).  What differs is only *how* it reaches the
front-end's pages and port, which each host passes in.  This package imports
``ringvisor.abi`` and the disk medium of ``ringvisor.hw`` only.
"""
