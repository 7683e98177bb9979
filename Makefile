# The README's commands. `make test` is what CI runs.
PY := .venv/bin/python

.PHONY: setup test test-fast demo compare
setup:
	bash tools/install/setup_env.sh

# setup_env.sh is a no-op in seconds when the stack is already installed; -rs prints the
# reason of every skipped test (the Slurm tests skip only when Slurm cannot be installed).
# Two worker processes: a Slurm cluster's tests stay on one, the longest groups start first
# (tests/conftest.py); TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest tests -q -rs -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder
test: setup
	$(PYTEST)

# every test not marked slow (docs/testing.md says which tier to run when)
test-fast: setup
	$(PYTEST) -m "not slow"

# the whole pipeline at CPU scale on generated data; DATA=DIR for a real dataset folder
demo: setup
	bash tools/demo.sh

# every pretraining x fine-tuning recipe on one CPU budget, on the demo's generated data
compare: setup
	$(PY) tools/compare_recipes.py
