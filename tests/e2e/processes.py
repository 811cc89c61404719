"""Processes the e2e harnesses start: free ports, console scripts, teardown by PID, log tails.

Every process a harness starts gets its own process group, and teardown signals the group and
every descendant by PID (a component may start children in other groups), then SIGKILLs what
outlived the grace period.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import psutil


class HarnessError(RuntimeError):
    """Airflow (or a service it needs) did not do what the harness waited for; the message has log tails."""


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def console_script(name: str) -> str:
    """The console script installed beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise HarnessError(f"{name} is not installed; pip install -e . first")
    return found


def descendants(pid: int) -> list[int]:
    with contextlib.suppress(psutil.Error):
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    return []


def terminate(processes: list[subprocess.Popen[bytes]], grace: float, also: Iterable[int] = ()) -> None:
    """SIGTERM each process group (and every descendant by PID), then SIGKILL what is left."""
    pids: set[int] = set()
    for process in processes:
        if process.poll() is None:
            pids.add(process.pid)
            pids.update(descendants(process.pid))
    for pid in also:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).is_running():
                pids.update(descendants(pid))
    _signal_all(processes, pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
    survivors = {pid for pid in pids if psutil.pid_exists(pid) and not _is_zombie(pid)}
    _signal_all(processes, survivors, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def _signal_all(processes: list[subprocess.Popen[bytes]], pids: Iterable[int], signum: int) -> None:
    """``signum`` to the group of every live process, then to each PID."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signum)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _is_zombie(pid: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    return True


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(cannot read {path}: {error})"


def signal_tree(process: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to a process group and to every descendant by PID."""
    victims = [process.pid, *descendants(process.pid)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process group and every descendant by PID: a crash, no clean shutdown."""
    signal_tree(process, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
