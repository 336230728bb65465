"""The translator and the one-instruction interpreter agree in lockstep, block by block."""

from __future__ import annotations

import pytest

import ringvisor.hw.crosscheck as cc
from ringvisor.guests.build import image_path
from ringvisor.hw import alu

from hwtests import build_kernel


@pytest.mark.parametrize("name,iters", [("qsort", 2), ("dhrystone", 100), ("strings", 20),
                                        ("matmul", 2), ("crc32", 10), ("sieve", 1)])
def test_bench_images_agree(name, iters):
    r = cc.crosscheck(image_path(f"bench-{name}").read_bytes(), f"iters={iters}", 2_000_000)
    assert r.ok, r.message
    assert "guest stopped (exit)" in r.message


@pytest.mark.parametrize("kernel", ["faults", "privilege", "paging", "smc", "sysinsn", "alu-O2"])
def test_conformance_kernels_agree(kernel):
    r = cc.crosscheck(build_kernel(kernel).read_bytes(), "", 3_000_000)
    assert r.ok, r.message


def test_fpu_kernel_agrees():
    """x87/SSE functions called from translated blocks leave the state one-instruction
    execution leaves, FPU registers included (C code with SSE2 and long double)."""
    r = cc.crosscheck(build_kernel("fpu-sse2").read_bytes(), "part=0", 3_000_000)
    assert r.ok, r.message
    assert "guest stopped (exit)" in r.message


def test_a_translator_bug_is_caught(monkeypatch):
    """Break SHL/SHR/... for the translator only: the check must point at it."""
    real = alu.shift
    broken = lambda kind, a, c, size, fl: ((real(kind, a, c, size, fl)[0] ^ 1), fl)
    made = []
    orig_machine = cc.Machine

    def machine(mem_mb, engine, **kw):
        m = orig_machine(mem_mb, engine, **kw)
        if engine == "jit":
            m.cpu.cache.env["SHIFT"] = broken
        made.append(m)
        return m

    monkeypatch.setattr(cc, "Machine", machine)
    r = cc.crosscheck(build_kernel("alu-O2").read_bytes(), "", 3_000_000)
    assert not r.ok
    assert "states differ" in r.message and "SHIFT" in r.message
