"""Serving the emulator: on a background thread (:class:`EmulatorServer`) or in the foreground (:func:`run_emulator`).

``claude-batch emulator`` calls :func:`run_emulator`; the pytest plugin and the demo use :class:`EmulatorServer`.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from .app import build_app
from .config import EmulatorConfig
from .store import EmulatorState

__all__ = ["EmulatorServer", "run_emulator"]


def _bind(host: str, port: int) -> socket.socket:
    """Bind (and so reserve) the port up front, so ``port=0`` yields a known free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # An explicit IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto is TCP, and without it every response pays ~40 ms of Nagle/delayed-ACK latency.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _uvicorn_config(app: ASGIApp, *, quiet: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="h11",
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_level="warning",
        log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        timeout_graceful_shutdown=2,
    )


class EmulatorServer:
    """The emulator on a background thread: ``with EmulatorServer() as emu: ... emu.url``."""

    def __init__(
        self,
        config: EmulatorConfig | Mapping[str, Any] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.emulator_state = EmulatorState(config)
        self.app = build_app(self.emulator_state)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL to give the SDK, e.g. ``http://127.0.0.1:41234``."""
        return _url(self.host, self.port)

    @property
    def config(self) -> EmulatorConfig:
        return self.emulator_state.config

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        """Bind, start uvicorn on a daemon thread and wait until it accepts connections."""
        if self._thread is not None:
            return self
        self._socket = _bind(self.host, self.port)
        self.port = self._socket.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self.app, quiet=True))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"claude-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulator failed to start on {self.url}")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Shut uvicorn down and join its thread (idempotent)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def configure(self, **partial: Any) -> EmulatorConfig:
        """Partially update the config (same as ``POST /_emulator/config``)."""
        return self.emulator_state.configure(partial)

    def reset(self, config: bool | EmulatorConfig | Mapping[str, Any] = False) -> None:
        """Drop batches and counters; ``config=True`` restores defaults, a config replaces it."""
        self.emulator_state.reset(config)

    def state(self) -> dict[str, Any]:
        """Same document as ``GET /_emulator/state``."""
        return self.emulator_state.snapshot()

    def advance(self, seconds: float) -> float:
        """Move the emulator clock forward by ``seconds``."""
        return self.emulator_state.advance(seconds)


def run_emulator(
    config: EmulatorConfig | Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM (exits cleanly on both)."""
    state = EmulatorState(config)
    sock = _bind(host, port)
    url = _url(host, sock.getsockname()[1])
    server = uvicorn.Server(_uvicorn_config(build_app(state), quiet=False))
    # uvicorn re-raises the signal it caught after a graceful shutdown; make that a no-op.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_ready is not None:
            on_ready(url)
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
