"""A throwaway PostgreSQL for tests: Debian's postgresql as its own cluster, in a temporary
folder, on a free loopback port, stopped and removed afterwards.

initdb and the server refuse to run as root: as root they run as the `postgres` user the
package creates (`runuser`), in a folder handed to that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import free_port

# Debian installs each major version beside the others; the newest one here (15 on Debian 12).
_INITDBS = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
PG_BIN = _INITDBS[-1].parent if _INITDBS else Path("/usr/lib/postgresql/15/bin")
DATABASE = "prefect"


@dataclass
class Postgres:
    port: int
    folder: Path

    @property
    def url(self) -> str:
        """What Prefect's PREFECT_API_DATABASE_CONNECTION_URL takes (trust auth on loopback:
        no password in a throwaway cluster)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{DATABASE}"


def _as_owner(cmd: list[str], owner: pwd.struct_passwd | None) -> list[str]:
    return ["runuser", "-u", owner.pw_name, "--", *cmd] if owner else cmd


@contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(
            f"PostgreSQL not found at {PG_BIN}: install Debian's postgresql "
            "(./install.sh --test does when run as root)"
        )
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="styledrop-pg-"))
    if owner:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, log = folder / "data", folder / "server.log"
    port = free_port()

    def run(*cmd: str) -> None:
        done = subprocess.run(
            _as_owner([str(PG_BIN / cmd[0]), *cmd[1:]], owner),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=folder,
        )
        if done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}{tail}")

    started = False
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        # Loopback only, its socket in its own folder; durability is not a test's concern.
        options = (
            f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        run("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        started = True
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE)
        yield Postgres(port=port, folder=folder)
    finally:
        if started:
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
        shutil.rmtree(folder, ignore_errors=True)
