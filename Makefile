# The README's commands. `make test` is what CI runs.
PY := .venv/bin/python

.PHONY: setup test demo
setup:
	bash tools/install/setup_env.sh

# setup_env.sh is a no-op in seconds when the stack is already installed
test: setup
	$(PY) -m pytest tests -q

# the whole pipeline at CPU scale on generated data; DATA=DIR for a real dataset folder
demo: setup
	bash tools/demo.sh
