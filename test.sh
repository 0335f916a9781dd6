#!/usr/bin/env bash
# Installs styledrop with its test dependencies into .venv, then lints and runs every test but
# the `long` ones (minutes each: the 200-file load tests, the Prefect restart test, the
# container build; .ci/run runs them after this). Extra arguments go to pytest; an -m of your
# own replaces `not long` (e.g. -m "not slow": no end-to-end tests; -m long: only the long ones).
# Three test processes on two cores, a test file each at a time: the end-to-end tests spend
# much of their time waiting on servers and subprocesses (on 2 cores: 8.3 minutes with three,
# 8.9 with four and CPU-bound; two took 12.0 before the scale-out tests were cut; see
# bench/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")"
./install.sh --test
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n 3 --dist loadfile --durations=25 -m "not long" "$@"
