"""The hypervisor (mechanism): one per machine, many domains (the chapter's Xen).

``core.Hypervisor`` owns the machine; ``domain`` is a domain's state,
``pvdomain`` the monitor that runs a para-virtual one; ``frames`` the machine
frame pool, ``memory`` the P2M and memory_op, ``grant`` grant tables,
``evtchn`` inter-domain event channels, ``sched`` the credit scheduler,
``timers`` the domains' virtual timers, ``xsm`` the security module,
``control`` domctl/sysctl/xsm_op, ``console`` the hypervisor's console, and
``interface`` the hypercall interface Domain 0's toolstack uses -- the only
module of this package the toolstack may import.
"""
