# shellcheck shell=bash
# Sourced, once REPO is set, by train.sbatch and test.sbatch (which run it) and by
# submit_pipeline.sh (which checks it and exports it to the jobs): the Python the jobs run.
# PYTHON when set, else the repository's environment (make setup), else python from the PATH.
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x $REPO/.venv/bin/python ]]; then
        PYTHON=$REPO/.venv/bin/python
    else
        PYTHON=python
    fi
fi
