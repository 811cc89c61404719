"""Control an emulator that runs in another process over its admin endpoints (standard library only)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["EmulatorClient"]


class EmulatorClient:
    """Control an emulator running elsewhere (another process) over its admin endpoints."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with self._opener.open(request, timeout=self.timeout) as response:
            return json.loads(response.read())

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/_emulator/health")

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_emulator/state")

    def configure(self, **partial: Any) -> dict[str, Any]:
        return self._call("POST", "/_emulator/config", partial)

    def reset(self, config: bool = False) -> dict[str, Any]:
        return self._call("POST", "/_emulator/reset", {"config": config})

    def advance(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "/_emulator/advance", {"seconds": seconds})

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        """Poll ``/_emulator/health`` until it answers (for freshly spawned processes)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.health()
                return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
