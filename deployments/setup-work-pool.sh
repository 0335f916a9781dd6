#!/usr/bin/env bash
# Create (or update) what the `stylize/stylize` deployment runs on, on the Prefect server at
# $PREFECT_API_URL:
#   - a process work pool (default name styledrop-gpu = STYLEDROP_WORK_POOL): each GPU machine
#     runs one worker on it (`styledrop worker`, or `prefect worker start --pool styledrop-gpu`);
#   - the global concurrency limit the flow takes a GPU slot from (default name styledrop-gpu =
#     STYLEDROP_GPU_LIMIT) with STYLEDROP_GPU_SLOTS slots (default 1: one job per GPU; use the
#     total number of GPUs behind the pool).
# Idempotent: run it again to change the number of slots.
#
#   PREFECT_API_URL=http://server:4200/api deployments/setup-work-pool.sh [SLOTS]
set -euo pipefail

export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
export DO_NOT_TRACK="${DO_NOT_TRACK:-1}"

PREFECT="${PREFECT:-prefect}"
POOL="${STYLEDROP_WORK_POOL:-styledrop-gpu}"
LIMIT="${STYLEDROP_GPU_LIMIT:-styledrop-gpu}"
SLOTS="${1:-${STYLEDROP_GPU_SLOTS:-1}}"

if "$PREFECT" --no-prompt work-pool inspect "$POOL" >/dev/null 2>&1; then
    echo "work pool $POOL exists"
else
    "$PREFECT" --no-prompt work-pool create "$POOL" --type process
fi

if "$PREFECT" --no-prompt global-concurrency-limit inspect "$LIMIT" >/dev/null 2>&1; then
    "$PREFECT" --no-prompt global-concurrency-limit update "$LIMIT" --limit "$SLOTS"
else
    "$PREFECT" --no-prompt global-concurrency-limit create "$LIMIT" --limit "$SLOTS"
fi
echo "GPU concurrency limit $LIMIT: $SLOTS slot(s)"
