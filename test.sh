#!/usr/bin/env bash
# Installs styledrop with its test dependencies into .venv, then lints and runs every test,
# the slow end-to-end ones included. Extra arguments go to pytest (e.g. -m "not slow").
# Two test processes (one per core), a test file each at a time: the end-to-end tests spend
# much of their time waiting on servers and subprocesses (measured here: about 15 -> 9 minutes).
set -euo pipefail
cd "$(dirname "$0")"
./install.sh --test
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n 2 --dist loadfile --durations=25 "$@"
