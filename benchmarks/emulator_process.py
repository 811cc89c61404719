"""The emulator in its own process, so its CPU and memory never count against a measured process.

Started with the package's own CLI (``claude-batch emulator``), controlled over its admin
endpoints (``/_emulator/config``, ``/_emulator/reset``, ``/_emulator/state``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from airflow_provider_claude_batch.testing.emulator import EmulatorClient


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmulatorProcess:
    """``with EmulatorProcess(log_path) as emulator: emulator.url``; stopped (SIGTERM) on exit."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.client = EmulatorClient(self.url, timeout=120)

    def __enter__(self) -> EmulatorProcess:
        command = [sys.executable, "-m", "airflow_provider_claude_batch.cli", "emulator", "--port", str(self.port)]
        self._log = open(self.log_path, "wb")  # closed in __exit__
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        try:
            self.client.wait_until_ready(timeout=60)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._log.close()

    def reset(self, **config: Any) -> None:
        """Forget every batch and counter (freeing the emulator's memory), then apply ``config``."""
        self.client.reset(config=True)
        if config:
            self.client.configure(**config)

    def state(self) -> dict[str, Any]:
        return self.client.state()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def emulator_env() -> dict[str, str]:
    """The environment of the emulator process: no inherited emulator settings from the caller."""
    return {key: value for key, value in os.environ.items() if not key.startswith("CLAUDE_EMULATOR_")}
