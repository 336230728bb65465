"""The measuring tools of docs/performance.md: bad input gets one line and exit 2, and
``opcost`` finds the guest's timed loop under a monitor (its counts are exact, so a
monitor's operation must cost more bytecodes than the same operation natively)."""

from __future__ import annotations

from ringvisor.tools import alternate, opcost


def test_opcost_refuses_bad_input(capsys):
    assert opcost.main(["nosuch"]) == 2
    assert opcost.main(["syscall", "many"]) == 2
    assert opcost.main(["syscall", "2", "vmware"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("opcost: ") for line in err)


def test_alternate_refuses_bad_input(capsys, tmp_path):
    assert alternate.main([]) == 2
    assert alternate.main([str(tmp_path)]) == 2
    assert alternate.main([".", "syscall", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3


def test_opcost_counts_a_reflected_system_call():
    native, native_calls = opcost.count("syscall", "native", 2)
    trapemu, trapemu_calls = opcost.count("syscall", "trapemu", 2)
    # the same 81 guest instructions, plus an entry into the monitor and its IRET
    assert 1000 < native < trapemu
    assert native_calls < trapemu_calls
