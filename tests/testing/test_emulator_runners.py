"""Config sources, admin endpoints and runners (``emulator/config.py``, ``server.py``, ``client.py``, the CLI)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from emulator_helpers import client, requests

from airflow_provider_claude_batch.cli import build_parser
from airflow_provider_claude_batch.testing.emulator import (
    EmulatorClient,
    EmulatorConfig,
    EmulatorServer,
    load_config,
)


def test_config_sources(tmp_path):
    path = tmp_path / "emu.json"
    path.write_text(json.dumps({"processing_seconds": 9, "outcomes": [{"match": "x", "result": "expired"}]}))
    env = {"CLAUDE_EMULATOR_PROCESSING_SECONDS": "3", "CLAUDE_EMULATOR_API_KEY": "k", "CLAUDE_EMULATOR_SEED": "4"}
    config = load_config(path, environ=env, time_scale=2.0, api_key=None)
    assert config.processing_seconds == 3 and config.api_key == "k" and config.seed == 4
    assert config.time_scale == 2.0 and config.outcomes[0].result == "expired"
    assert EmulatorConfig.from_file(path).processing_seconds == 9
    with pytest.raises(ValueError):
        EmulatorConfig(faults=[{"path": "/v1/x"}])  # neither status nor cut_after_rows
    with pytest.raises(ValueError):
        EmulatorConfig(outcomes=[{"match": "(", "result": "errored"}])
    with pytest.raises(ValueError):
        EmulatorConfig(procesing_seconds=1)


def test_admin_endpoints_over_http(claude_emulator):
    admin = EmulatorClient(claude_emulator.url)
    assert admin.health()["status"] == "ok"
    assert admin.configure(processing_seconds=0.05)["processing_seconds"] == 0.05
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(2))
    state = admin.state()
    assert state["create_calls"] == 1 and state["batches"][0]["id"] == batch.id
    assert state["calls"] == {"POST /v1/messages/batches": 1}
    assert admin.advance(60)["clock_offset"] == 60
    assert api.messages.batches.retrieve(batch.id).processing_status == "ended"
    admin.reset()
    assert admin.state()["batch_count"] == 0 and admin.state()["config"]["processing_seconds"] == 0.05
    admin.reset(config=True)
    assert admin.state()["config"]["processing_seconds"] == 2.0
    bad = httpx2.post(f"{claude_emulator.url}/_emulator/config", json={"error_rate": 3})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_server_context_manager_binds_a_free_port():
    with EmulatorServer({"processing_seconds": 0}) as emu:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", emu.url) and emu.port > 0
        assert client(emu).messages.batches.list().data == []
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{emu.url}/_emulator/health")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_starts_answers_and_stops_on_sigterm():
    assert build_parser().parse_args(["emulator", "--port", "1"]).port == 1
    port = _free_port()
    script = shutil.which("claude-batch", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "airflow_provider_claude_batch.cli"]
    process = subprocess.Popen(
        [
            *command,
            "emulator",
            "--port",
            str(port),
            "--processing-seconds",
            "1",
            "--rate-limit-rpm",
            "50",
            "--rate-limit-window-seconds",
            "30",
            "--max-queued-requests",
            "1000",
            "--propagation-delay-seconds",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert process.stdout is not None
        assert url in process.stdout.readline()
        EmulatorClient(url).wait_until_ready(timeout=10)
        config = EmulatorClient(url).state()["config"]
        assert config["processing_seconds"] == 1
        assert (config["rate_limit_rpm"], config["rate_limit_window_seconds"]) == (50, 30)
        assert (config["max_queued_requests"], config["propagation_delay_seconds"]) == (1000, 4)
        banner = [process.stdout.readline() for _ in range(6)]
        assert "  limit:      50 batch API calls per 30 s\n" in banner
        assert "  limit:      new batches answer 404 for 4 s\n" in banner
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
