# The README's commands. `make test` is what CI runs.
PY := .venv/bin/python

.PHONY: setup test test-fast demo compare
setup:
	bash tools/install/setup_env.sh

# setup_env.sh is a no-op in seconds when the stack is already installed; -rs prints the
# reason of every skipped test (the Slurm tests skip only when Slurm cannot be installed).
# Two worker processes with one torch thread each (tests/conftest.py groups the work and starts
# the longest first).
TEST_WORKERS ?= 2
# The tests' temporary folders (their runs' checkpoints: about 100 GB written over the suite,
# up to 12 GB at once) go to /dev/shm when it has 16 GiB free and the machine 20 GiB of memory
# available: mmengine writes a checkpoint in one call, which cost 7 s of kernel CPU per GB on
# this VM's ext4 disk and 0.4 s on tmpfs (docs/testing.md).
# TEST_TMPDIR=DIR picks another place.
TEST_TMPDIR ?= $(shell { [ -w /dev/shm ] \
	&& [ $$(df -k --output=avail /dev/shm | tail -1) -ge 16777216 ] \
	&& [ $$(awk '/^MemAvailable:/ {print $$2}' /proc/meminfo) -ge 20971520 ] \
	&& echo /dev/shm; } 2>/dev/null)
PYTEST := $(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR)) $(PY) -m pytest tests -q -rs
PARALLEL := OMP_NUM_THREADS=1 $(PYTEST) -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder
test: setup
	$(PARALLEL)

# every test not marked slow, in a few minutes (docs/testing.md says which tier to run when)
test-fast: setup
	$(PARALLEL) -m "not slow"

# the whole pipeline at CPU scale on generated data; DATA=DIR for a real dataset folder
demo: setup
	bash tools/demo.sh

# every pretraining x fine-tuning recipe on one CPU budget, on the demo's generated data
compare: setup
	$(PY) tools/compare_recipes.py
