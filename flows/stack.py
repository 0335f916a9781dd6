"""Process supervision for `styledrop up` and `styledrop worker`: start children, know when
they are healthy, notice when one dies, and stop every one of them - with whatever they
started - on the way out; and the one way styledrop's processes take SIGINT and SIGTERM
(``Signals``: counted, acted on by the loop that owns the process).

Each child gets its own session (process group), so a Ctrl-C in the terminal reaches only the
supervisor, which then stops the children in its own order: a first signal to the child
itself (its documented way to shut down, which also lets it stop what it started), a second
to its whole process group (Prefect workers and runners need one), then SIGKILL for the group
and for any descendant that left it (Prefect starts flow runs in sessions of their own).

Nothing here knows about Prefect or Streamlit: `flows.commands.up` says what to run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

Probe = Callable[[], bool]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    # Answers "ready to serve?"; None means "alive is ready" (nothing to ask it).
    ready: Probe | None = None
    cwd: Path | None = None
    # First signal: the one the program documents for a clean stop.
    stop_signal: int = signal.SIGTERM
    # Without a probe: seconds it must stay alive to count as started (catches a bad flag).
    settle_s: float = 2.0
    # Sent to it by the kernel if the supervisor dies, however it dies (Linux).
    parent_death_signal: int = signal.SIGTERM


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes]
    log: Path | None  # None: it writes to our own stdout/stderr
    # Every descendant seen so far: flow-run processes leave the child's process group, so
    # they are remembered here to make sure they are gone after a stop.
    seen: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 25) -> str:
        return log_tail(self.log, lines) if self.log else ""

    def remember_descendants(self) -> set[int]:
        if self.alive():
            self.seen |= descendants(self.pid)
        return self.seen


class StartupCancelled(Exception):
    """A stop was asked for (a signal) while waiting for children to become ready."""


class StartupError(RuntimeError):
    """A child died or never became ready while the stack was starting."""

    def __init__(self, child: Child, reason: str) -> None:
        super().__init__(f"{child.name} {reason}")
        self.child = child
        self.reason = reason


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def start_child(spec: ChildSpec, log_dir: Path | None) -> Child:
    """Start ``spec`` in a session of its own, logging to ``<log_dir>/<name>.log`` (appended,
    with a header line per start), or to our stdout/stderr when ``log_dir`` is None."""
    if log_dir is None:
        return Child(spec, _popen(spec, None), None)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{spec.name}.log"
    with log.open("ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(spec.argv)}\n".encode())
        out.flush()
        return Child(spec, _popen(spec, out), log)


def _popen(spec: ChildSpec, out: BinaryIO | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        spec.argv,
        env=spec.env,
        cwd=spec.cwd,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
        start_new_session=True,  # its own process group; see the module docstring
        preexec_fn=lambda: _die_with_parent(spec.parent_death_signal),
    )


def _die_with_parent(sig: int) -> None:
    """In the child before exec (Linux): get ``sig`` when the supervisor dies, even by
    SIGKILL, so no child outlives it holding a port or a GPU."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, sig)


def wait_ready(
    children: Iterable[Child],
    timeout: float,
    interval: float = 0.5,
    cancelled: Callable[[], bool] = lambda: False,
) -> None:
    """Return once every child answers its probe; raise StartupError naming the first that
    died or was not ready within ``timeout`` seconds, StartupCancelled when ``cancelled()``."""
    pending = list(children)
    deadline = time.monotonic() + timeout
    while pending:
        if cancelled():
            raise StartupCancelled
        for child in list(pending):
            child.remember_descendants()
            if not child.alive():
                raise StartupError(child, f"exited with code {child.proc.returncode}")
            if child.spec.ready is None:
                if time.monotonic() - child.started >= child.spec.settle_s:
                    pending.remove(child)
            elif _probe(child.spec.ready):
                pending.remove(child)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise StartupError(pending[0], f"was not ready after {timeout:.0f} s")
        time.sleep(interval)


def _probe(probe: Probe) -> bool:
    try:
        return bool(probe())
    except Exception:  # noqa: BLE001 - not answering yet is the normal case while starting
        return False


def stop_children(children: list[Child], timeout: float) -> list[str]:
    """Stop ``children`` together: first signal, then after half of ``timeout`` a SIGTERM to
    each process group, then SIGKILL. Returns one line per child saying how it ended."""
    for child in children:
        child.remember_descendants()
        signal_pid(child.pid, child.spec.stop_signal)
    wait_exit(children, timeout / 2)
    for child in children:
        if child.alive():
            _signal_group(child.pid, signal.SIGTERM)
    wait_exit(children, timeout / 2)
    report = []
    for child in children:
        forced = child.alive()
        _signal_group(child.pid, signal.SIGKILL)
        # Descendants that moved to sessions of their own (flow runs) and outlived the stop.
        leftovers = [pid for pid in child.seen if pid_alive(pid)]
        for pid in leftovers:
            signal_pid(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(5)
        how = f"killed after {timeout:.0f} s" if forced else f"exit {child.proc.returncode}"
        if leftovers:
            how += f"; killed {len(leftovers)} leftover process(es)"
        report.append(f"{child.name}: {how}")
    return report


def kill_now(children: list[Child]) -> None:
    """SIGKILL each child's group, then every descendant seen: the machine-is-gone stop, for
    when nobody may report anything on the way down."""
    for child in children:
        child.remember_descendants()
        _signal_group(child.pid, signal.SIGKILL)
    for child in children:
        for pid in child.seen:
            signal_pid(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(5)


def wait_exit(children: list[Child], seconds: float = float("inf")) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(c.alive() for c in children):
        time.sleep(0.1)


class Signals:
    """SIGINT and SIGTERM from now on (or until the ``with`` block ends), counted; each also
    calls ``then(signum, count)``. A handler stops nothing itself: the loop that owns the
    process looks at the count (true once one came) and stops in its own order."""

    def __init__(self, then: Callable[[int, int], object] = lambda signum, count: None) -> None:
        self.count = 0
        self._then = then
        self._before = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}

    def _handle(self, signum: int, _frame: object) -> None:
        self.count += 1
        self._then(signum, self.count)

    def __bool__(self) -> bool:
        return self.count > 0

    def __enter__(self) -> Signals:
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._before.items():
            signal.signal(sig, handler)


def supervise(
    children: list[Child], signals: Signals, done: Callable[[], bool] = lambda: False
) -> Child | None:
    """Watch ``children`` until a signal or ``done()`` (None) or one of them exits (that
    child)."""
    while not signals:
        for child in children:
            child.remember_descendants()
            if not child.alive():
                return child
        if done():
            return None
        time.sleep(0.5)
    return None


def signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state != "Z"


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


# --- before starting anything -----------------------------------------------------------


def port_in_use(host: str, port: int) -> str | None:
    """Why ``port`` on ``host`` cannot be bound, or None when it is free. Binds the way the
    servers will (SO_REUSEADDR), so a socket in TIME_WAIT from a previous run is not a
    false alarm but any listener is found."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in use"
            return exc.strerror or str(exc)
    return None


class StackLock:
    """An exclusive lock file holding the owner's pid. The kernel drops the lock when the
    owner dies however it dies, so a stale file never blocks the next start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> int | None:
        """Take the lock and return None, or return the pid of the process holding it
        (0 when unknown)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            return int(holder) if holder.isdigit() else 0
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None
