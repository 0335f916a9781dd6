"""A real OpenID Connect provider on loopback for the sign-in tests: PyPI's oidc-provider-mock
(0.4.x needs Python >= 3.12, newer than styledrop's floor), in a venv of its own outside the
repository, cached under ~/.cache/styledrop/ by the hash of tests/oidc-provider.txt.

`install.sh --test` makes the venv (`python tests/oidc_provider.py`); a test that finds it
missing makes it too. Nothing else is installed anywhere.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("oidc-provider.txt")


def python_312() -> str | None:
    """An interpreter of Python 3.12 or newer: on PATH, or one of pyenv's."""
    candidates = [shutil.which(f"python3.{minor}") for minor in (12, 13, 14)]
    pyenv = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv}/versions/3.1[2-9]*/bin/python3"))
    for exe in filter(None, candidates):
        done = subprocess.run(
            [exe, "-c", "import sys, venv; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
        )
        if done.stdout.strip() == "True":
            return exe
    return None


def venv_dir() -> Path:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "styledrop" / f"oidc-provider-{digest}"


def ensure_venv() -> Path:
    """The provider's executable, installing its venv first when missing. Raises
    RuntimeError saying why it cannot."""
    venv = venv_dir()
    exe = venv / "bin" / "oidc-provider-mock"
    # Written last: a venv whose install was interrupted is made again, not used.
    complete = venv / "styledrop-complete"
    if complete.exists():
        return exe
    python = python_312()
    if python is None:
        raise RuntimeError("no Python >= 3.12 here (oidc-provider-mock 0.4 needs one)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--disable-pip-version-check", "-r", str(REQUIREMENTS)], check=True)
    complete.write_text(REQUIREMENTS.read_text())
    return exe


@contextlib.contextmanager
def oidc_provider(port: int, users: list[dict], log: Path) -> Iterator[str]:
    """Run the provider on 127.0.0.1:``port`` with ``users`` (claims, each with ``sub``);
    yield its issuer URL."""
    import httpx

    exe = ensure_venv()
    args = [str(exe), "--host", "127.0.0.1", "--port", str(port)]
    for claims in users:
        args += ["--user-claims", json.dumps(claims)]
    proc = subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    issuer = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"the OIDC provider exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("the OIDC provider did not answer in 60 s")
        yield issuer
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    try:
        print(f"OIDC provider for the sign-in tests: {ensure_venv()}")
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"warning: the sign-in browser test will be skipped: {exc}", file=sys.stderr)
