#!/usr/bin/env bash
# Installs styledrop with its test dependencies into .venv, then lints and runs every test,
# the slow end-to-end ones included. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")"
./install.sh --test
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
