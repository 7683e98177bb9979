# The README's commands. `make test` is what CI runs.
PY := .venv/bin/python

.PHONY: setup test demo compare
setup:
	bash tools/install/setup_env.sh

# setup_env.sh is a no-op in seconds when the stack is already installed; -rs prints the
# reason of every skipped test (the Slurm tests skip only when Slurm cannot be installed)
test: setup
	$(PY) -m pytest tests -q -rs

# the whole pipeline at CPU scale on generated data; DATA=DIR for a real dataset folder
demo: setup
	bash tools/demo.sh

# every pretraining x fine-tuning recipe on one CPU budget, on the demo's generated data
compare: setup
	$(PY) tools/compare_recipes.py
