"""Process supervision (flows/stack.py) with real processes: readiness, a child dying while
starting, escalation to SIGKILL, descendants that left the process group, the lock, ports."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import wait_until

from flows import stack


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def spec(name: str, code: str, **kw: object) -> stack.ChildSpec:
    return stack.ChildSpec(name, python(code), {"PATH": "/usr/bin:/bin"}, **kw)  # type: ignore[arg-type]


def test_a_child_dying_while_starting_is_named_with_its_log(tmp_path: Path) -> None:
    child = stack.start_child(
        spec("broken", "import sys; print('cannot bind: boom', flush=True); sys.exit(3)"),
        tmp_path,
    )
    with pytest.raises(stack.StartupError) as info:
        stack.wait_ready([child], timeout=30, interval=0.05)
    assert info.value.child is child
    assert "exited with code 3" in str(info.value)
    assert "cannot bind: boom" in child.tail()


def test_a_child_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    child = stack.start_child(
        spec("slow", "import time; time.sleep(60)", ready=lambda: False), tmp_path
    )
    try:
        with pytest.raises(stack.StartupError, match="slow was not ready"):
            stack.wait_ready([child], timeout=0.5, interval=0.05)
    finally:
        stack.stop_children([child], timeout=2)
    assert not child.alive()


def test_stop_escalates_and_kills_descendants_that_left_the_group(tmp_path: Path) -> None:
    # A child that ignores SIGTERM and SIGINT and starts a grandchild in a session of its own
    # (as Prefect does with flow runs): only SIGKILL and the descendant sweep end them.
    code = """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             start_new_session=True)
        print(g.pid, flush=True)
        time.sleep(120)
    """
    child = stack.start_child(spec("stubborn", code, stop_signal=signal.SIGINT), tmp_path)
    grandchild = int(
        wait_until(
            lambda: child.tail().split("\n")[-1].strip().isdigit() and child.tail().split("\n")[-1],
            30,
            "the grandchild's pid",
        )
    )
    wait_until(lambda: grandchild in child.remember_descendants(), 10, "the grandchild seen")
    report = stack.stop_children([child], timeout=1.0)
    assert not child.alive()
    wait_until(lambda: not stack.pid_alive(grandchild), 10, "the grandchild to be gone")
    assert report == ["stubborn: killed after 1 s; killed 1 leftover process(es)"]


def test_a_well_behaved_child_stops_at_the_first_signal(tmp_path: Path) -> None:
    child = stack.start_child(
        spec(
            "polite",
            # SIGINT's default Python handler also where the test runner was started in the
            # background (a shell's background job inherits SIGINT ignored).
            "import signal, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "try:\n    print('in' + 'side', flush=True)\n    time.sleep(60)\n"
            "except KeyboardInterrupt: pass",
            stop_signal=signal.SIGINT,
        ),
        tmp_path,
    )
    # (The log's header line holds the source, hence the split marker.)
    wait_until(lambda: "inside" in child.tail(), 30, "the child to be in its try block")
    assert stack.stop_children([child], timeout=10) == ["polite: exit 0"]


def test_the_lock_names_its_holder_and_is_freed_when_it_dies(tmp_path: Path) -> None:
    lock_file = tmp_path / "up.lock"
    holder = subprocess.Popen(
        python(f"""
            import sys, time
            sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
            from flows.stack import StackLock
            from pathlib import Path
            assert StackLock(Path({str(lock_file)!r})).acquire() is None
            print("locked", flush=True)
            time.sleep(60)
        """),
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        assert stack.StackLock(lock_file).acquire() == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # Killed without any cleanup: the kernel dropped its lock.
    mine = stack.StackLock(lock_file)
    assert mine.acquire() is None
    mine.release()


def test_port_in_use_sees_a_listener_and_not_a_free_port() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert stack.port_in_use("127.0.0.1", port) == "in use"
    assert stack.port_in_use("127.0.0.1", port) is None


def test_children_die_with_their_supervisor_even_when_it_is_killed(tmp_path: Path) -> None:
    supervisor = subprocess.Popen(
        python(f"""
            import sys, time
            sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
            from pathlib import Path
            from flows import stack
            child = stack.start_child(
                stack.ChildSpec("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"],
                                {{}}),
                Path({str(tmp_path)!r}),
            )
            print(child.pid, flush=True)
            time.sleep(120)
        """),
        stdout=subprocess.PIPE,
    )
    assert supervisor.stdout is not None
    child_pid = int(supervisor.stdout.readline())
    assert stack.pid_alive(child_pid)
    supervisor.kill()  # SIGKILL: no chance to stop anything itself
    supervisor.wait()
    wait_until(lambda: not stack.pid_alive(child_pid), 10, "the orphan to get its SIGTERM")


def test_signals_are_counted_for_the_owner_and_the_old_handlers_come_back() -> None:
    import os

    got: list[tuple[int, int]] = []
    before = signal.getsignal(signal.SIGTERM)
    with stack.Signals(lambda signum, count: got.append((signum, count))) as signals:
        assert not signals
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        wait_until(lambda: signals.count == 2, 5, "both signals")
    assert got == [(signal.SIGTERM, 1), (signal.SIGINT, 2)]
    assert signal.getsignal(signal.SIGTERM) is before


def test_supervise_names_the_child_that_exits_and_stops_when_done(tmp_path: Path) -> None:
    slow = stack.start_child(spec("slow", "import time; time.sleep(60)"), tmp_path)
    quick = stack.start_child(spec("quick", "import sys; sys.exit(3)"), tmp_path)
    try:
        with stack.Signals() as signals:
            assert stack.supervise([slow, quick], signals) is quick
            assert stack.supervise([slow], signals, done=lambda: True) is None
    finally:
        stack.stop_children([slow], timeout=2)
