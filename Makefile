# The two commands of the README.  Both install what they need first.
PYTHON ?= python3

.PHONY: demo test setup setup-test

demo: setup
	ringvisor demo

# --dist loadscope: a module's tests stay on one worker, so a booted machine a module
# shares (its module-scoped fixtures) is booted once, not once per worker
test: setup-test
	$(PYTHON) -m pytest -q -n 2 --dist loadscope

setup:
	$(PYTHON) -m pip install -q -e .

# qemu-system-i386 is the reference hardware the guests are cross-checked against;
# gdb and chromium drive the debugger and the live view as a user would
setup-test:
	@command -v qemu-system-i386 >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq qemu-system-x86 >/dev/null; \
	    else echo "note: qemu-system-i386 not installed; the QEMU cross-checks will be skipped"; fi; }
	@{ command -v gdb >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; } || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq gdb chromium >/dev/null; \
	    else echo "note: gdb or chromium not installed; the debugger and live-view tests will be skipped"; fi; }
	$(PYTHON) -m pip install -q -e '.[test]'
