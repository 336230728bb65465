"""Indirect transfers predicted inside a translated block.

A block used to end at every ``ret`` and every indirect ``call``/``jmp``: C code that
calls a function in a loop, or through a pointer (``for (;;) t->func();``), never
became one unit, and each return cost a block exit, a dispatch and a block entry.
The translator now predicts the target of such a transfer and goes on translating
there, behind a guard: the block compares the actual target with the predicted one
and, if they differ, leaves exactly as a taken side exit does (registers and flags
written back, the instructions retired so far counted, the actual target returned
to the dispatch loop).  A wrong prediction therefore costs one comparison more than
the block end it replaces; a right one saves the exit, the dispatch and the entry.

Where a prediction comes from:

- a ``ret`` whose matching ``call`` the same block followed (a direct call into the
  same page): the return address that call pushed;
- any other ``ret``, ``call r/m`` or ``jmp r/m``: the target it took, seen by a
  :class:`Learner` that the block's exit calls while nothing is predicted there.
  Once the site has taken the same target ``LEARN_AFTER`` times in a row, the
  learner drops its block; the next lookup translates it again, predicting that
  target.  A site whose target keeps changing is given up after ``GIVE_UP`` changes
  (translated again without a learner, and never predicted).

So ``for (...) f();`` with ``f`` called directly in the same page is one block whose
loop branch leads back to its own start: a fused loop (``CodeCache.assemble``), as a
loop without the call is.  A predicted target equal to the block's own start makes
the block such a loop too, its back edge comparing the actual target (``push f; ret``).
"""

from __future__ import annotations

import iced_x86 as ix

PAGE = 0xFFFFF000
LEARN_AFTER = 16       # runs with one target before the block is translated again
GIVE_UP = 8            # changes of target after which a site is never predicted


class Learner:
    """Called by a block's exit with the target of its indirect transfer; returns it."""

    __slots__ = ("cache", "key", "eip", "site", "last", "runs", "changes")

    def __init__(self, cache, key: tuple[int, int, int], eip: int, site: tuple[int, int]) -> None:
        self.cache, self.key, self.eip, self.site = cache, key, eip, site
        self.last = None
        self.runs = 0
        self.changes = 0

    def __call__(self, target: int) -> int:
        if target == self.last:
            self.runs += 1
            if self.runs >= LEARN_AFTER:
                self._decide(target)
        else:
            self.last = target
            self.runs = 1
            self.changes += 1
            if self.changes > GIVE_UP:
                self._decide(None)
        return target

    def _decide(self, target: int | None) -> None:
        cache = self.cache
        sites = cache.predicted.setdefault(self.site[0] >> 12, {})
        # (another block holding the same site may have decided already: that stands)
        sites.setdefault(self.site, target)
        cache.retranslate(self.key, self.eip)


def speculate(cache, bb, ins, at: int, shadow: list[int], start: tuple[int, int],
              page: int, visited: set, room: bool) -> int | None:
    """The indirect transfer at physical address ``at`` was just emitted (its target in
    ``bb.indirect``): predict its target; where the block can go on there (the same
    linear ``page``, not translated yet in this block, ``room`` for more), emit the
    guard and return the target to translate next.  Else the block ends there,
    learning the target if nothing is known of the site yet.  ``shadow``: the return
    addresses of the calls the block followed; ``start``: the block's physical
    address and EIP."""
    mode = bb.mode
    phys, eip = start
    site = (at, mode.key)
    sites = cache.predicted.get(at >> 12, {})
    if ins.mnemonic == ix.Mnemonic.RET and shadow:
        target = shadow.pop()
    else:
        target = sites.get(site)
    if target is None:
        if site not in sites:
            bb.learner = bb.const(Learner(cache, (phys, mode.key, eip), eip, site))
        return None
    if target == eip:
        bb.targets.add(eip)        # the block is a loop: its back edge compares the target
        return None
    if (mode.cs_base + target) & PAGE != page or target in visited or \
            target > mode.cs_limit or not room:
        return None
    # a different target leaves here, as a taken side exit does (``BlockBuilder.side_exit``)
    bb.side_exit(f"{bb.indirect} != {target:#x}", bb.indirect, loop=False)
    if ins.mnemonic == ix.Mnemonic.CALL:
        shadow.append(ins.next_ip32)
    bb.ends = False
    bb.next_expr = None
    bb.indirect = None
    return target


def forget(cache, ppn: int, addr: int | None, end: int) -> None:
    """Bytes ``[addr, end)`` of page ``ppn`` were written (all of it if ``addr`` is
    None): what was learned of the transfers there is learned again."""
    sites = cache.predicted.get(ppn)
    if not sites:
        return
    if addr is None:
        del cache.predicted[ppn]
        return
    for site in [s for s in sites if addr - 15 < s[0] < end]:   # (an instruction: 15 bytes at most)
        del sites[site]
