"""The benchmark suite runs end to end (``--quick``) and reports every scenario and contender.

No figure is asserted here: timings on a shared machine are the benchmark's business, not a
test's. This only proves the one command works on a fresh checkout and its JSON is complete.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import REPO_ROOT


def test_quick_run_reports_every_scenario_and_contender(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["errors"] == []
    assert len(list(tmp_path.glob("*.json"))) == 2  # latest.json and its dated copy

    scenarios = results["scenarios"]
    assert set(scenarios["submit"]["rows"]) == {
        "ours",
        "ours_operator",
        "ours_operator_cap",
        "ours_operator_cache",
        "official",
        "common_ai",
        "raw",
    }
    land_sizes = scenarios["land"]["params"]["sizes"]
    assert set(scenarios["land"]["rows"]) == {"ours", "official", "common_ai", "raw"} | {
        f"ours@{size}" for size in land_sizes
    }
    waits = sorted((key for key in scenarios if key.startswith("wait_k")), key=lambda key: int(key[6:]))
    assert waits
    for key in waits:
        expected = {"ours", "official", "common_ai"} | ({"ours_frozen"} if key == waits[-1] else set())
        assert set(scenarios[key]["rows"]) == expected
    assert set(scenarios["emulator"]["rows"]) == {"emulator"}
    fleets = [key for key in scenarios if key.startswith("fleet_k")]
    assert fleets
    for key in fleets:
        assert set(scenarios[key]["rows"]) == {"ours", "official", "common_ai"}
        for row in scenarios[key]["rows"].values():
            assert {"ended", "rate_limited", "calls_sent", "peak_calls_per_minute"} <= set(row["summary"])
    assert "status_calls_per_cycle_max" in scenarios[fleets[0]]["rows"]["ours"]["summary"]
    for name in ("submit", "land", *waits, "emulator", *fleets):
        for row in scenarios[name]["rows"].values():
            assert row["reps"] >= 1
            assert "wall_s" in row["summary"]
            assert "peak_rss_growth_mb" in row["summary"]
    assert scenarios["polling_24h"]["calls_24h_fixed_60s"] == 1440
    assert {(e["contender"], e["mode"]) for e in scenarios["worker_time"]["entries"]} >= {
        ("ours", "deferrable"),
        ("official", "non-deferrable"),
    }
    assert any(target["target"].startswith("Fleet") for target in results["targets"])
    statuses = {target["status"] for target in results["targets"]}
    assert statuses <= {"MET", "MISSED", "N/A"}
    assert "### Targets" in completed.stdout
