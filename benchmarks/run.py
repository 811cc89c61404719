"""Run the benchmark suite: ``python -m benchmarks`` (or ``python benchmarks/run.py``); ``--quick`` for a smoke run.

The orchestrator starts the emulator in a process of its own, prepares the batches each scenario
needs over plain HTTP, then runs every measured repetition in a fresh child process
(:mod:`benchmarks.child`), one at a time, contenders interleaved within each repetition so that
drift in the machine's load spreads over all of them. It prints a Markdown table and writes JSON
to ``benchmarks/results/latest.json`` plus a dated copy. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python benchmarks/run.py``: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import analysis, analysis_fleet, workloads
from benchmarks.emulator_process import EmulatorProcess, emulator_env
from benchmarks.options import Config, parse_args

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
CONTENDERS = ("ours", "official", "common_ai", "raw")
WAIT_CONTENDERS = ("ours", "official", "common_ai")
FLEET_CONTENDERS = analysis_fleet.FLEET_CONTENDERS
# Outcome mix of the landed batches: 5% errored and 5% expired, the rest succeeded.
LAND_MIX = {"error_rate": 0.05, "expire_rate": 0.05, "seed": 7}
WARMUP_RESULTS = 10
CHILD_TIMEOUT_S = 600
MAX_REQUESTS_PER_BATCH = 100_000


@dataclass
class Runner:
    """Spawns measured children and keeps what they report (figures, or errors)."""

    config: Config
    emulator: EmulatorProcess
    workdir: Path
    env: dict[str, str]
    errors: list[dict[str, Any]] = field(default_factory=list)
    counter: int = 0

    def child(self, scenario: str, contender: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """One repetition in a fresh interpreter; its figures, or ``None`` (the error is recorded)."""
        self.counter += 1
        stem = self.workdir / f"{self.counter:03d}-{scenario}-{contender}"
        spec = {
            "scenario": scenario,
            "contender": contender,
            "params": {**params, "base_url": self.emulator.url},
            "output": str(stem.with_suffix(".out.json")),
        }
        stem.with_suffix(".spec.json").write_text(json.dumps(spec))
        where = f"{scenario}/{contender}" + (f" {params.get('label')}" if params.get("label") else "")
        load = os.getloadavg()[0]
        started = time.monotonic()
        with open(stem.with_suffix(".log"), "wb") as log:
            try:
                completed = subprocess.run(
                    [sys.executable, "-m", "benchmarks.child", str(stem.with_suffix(".spec.json"))],
                    cwd=REPO_ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=CHILD_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                self.errors.append({"where": where, "error": f"timed out after {CHILD_TIMEOUT_S} s"})
                return None
        output = stem.with_suffix(".out.json")
        if not output.exists():
            tail = stem.with_suffix(".log").read_text(errors="replace")[-2000:]
            self.errors.append({"where": where, "error": f"exit {completed.returncode}, no output: {tail}"})
            return None
        outcome = json.loads(output.read_text())
        if not outcome.get("ok"):
            self.errors.append({"where": where, "error": outcome.get("error"), "traceback": outcome.get("traceback")})
            return None
        figures = outcome["figures"]
        figures["loadavg_1m"] = load
        figures["process_s"] = time.monotonic() - started
        print(f"  {where:<34} {_brief(scenario, figures)}", flush=True)
        return figures

    def alone(self, scenario: str, contender: str, params: dict[str, Any], **emulator_config: Any) -> Any:
        """One repetition with the emulator to itself, reset first: its limit, call counters and clock are shared."""
        self.emulator.reset(**emulator_config)
        return self.child(scenario, contender, params)

    def children(self, jobs: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any] | None]:
        """Run ``jobs`` one after another (or ``config.jobs`` at a time in quick mode)."""
        if self.config.jobs <= 1:
            return [self.child(*job) for job in jobs]
        with concurrent.futures.ThreadPoolExecutor(self.config.jobs) as pool:
            return list(pool.map(lambda job: self.child(*job), jobs))


def _brief(scenario: str, figures: dict[str, Any]) -> str:
    if scenario == "fleet":
        delay = figures.get("delay_max_real_s")
        return (
            f"ended {figures['ended']}/{figures['k']}, {figures['rate_limited']} x 429, {figures['calls_sent']} calls, "
            f"delay max {'-' if delay is None else f'{delay:.1f}'} s real, lag max {figures['lag_max_ms']:.0f} ms "
            f"(w/o GC {figures['lag_max_without_gc_ms']:.0f}), rss +{figures['peak_rss_growth_mb']:.1f} MiB"
        )
    if scenario == "wait":
        return (
            f"rss +{figures['peak_rss_growth_mb']:.1f} MiB, lag max {figures['lag_max_ms']:.0f} ms "
            f"(w/o GC {figures['lag_max_without_gc_ms']:.0f}), {figures['status_calls_per_batch']:.1f} calls/batch, "
            f"delay max {figures['delay_max_s']:.2f} s"
        )
    return f"{figures['wall_s']:.2f} s, rss +{figures['peak_rss_growth_mb']:.1f} MiB, cpu {figures['cpu_s']:.2f} s"


def _rows(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        key: {"reps": len(values), "summary": analysis.summarize(values), "runs": values}
        for key, values in runs.items()
        if values
    }


# -- scenarios ------------------------------------------------------------------------------------


def run_submit(runner: Runner) -> dict[str, Any]:
    config = runner.config
    print(f"1. submit {config.requests:,} requests x {config.reps}", flush=True)
    contenders = ("ours", "ours_operator", "ours_operator_cap", "ours_operator_cache", "official", "common_ai", "raw")
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    workdir = str(runner.workdir / "submit")
    for rep in range(config.reps):
        params = {"count": config.requests, "label": f"rep {rep + 1}", "workdir": workdir}
        jobs = [("submit", c, params) for c in contenders]
        if config.jobs <= 1:
            for job in jobs:
                runner.emulator.reset()  # frees the batches of earlier repetitions in the emulator
                figures = runner.child(*job)
                if figures:
                    runs[job[1]].append(figures)
        else:
            for job, figures in zip(jobs, runner.children(jobs), strict=True):
                if figures:
                    runs[job[1]].append(figures)
    runner.emulator.reset()
    return {"params": {"count": config.requests, "reps": config.reps}, "rows": _rows(runs)}


def _create_ended_batches(url: str, total: int) -> list[list[Any]]:
    """Ended batches holding ``total`` requests (100,000 at most each): ``[batch id, first index, count]``.

    Custom ids are ``<KEY16>-<index>`` over the whole set (the shape common-ai parses). Each batch's
    results are downloaded once here: the emulator renders a results file on the first download
    and replays it after, as the API serves a stored file, so no measurement pays for rendering.
    """
    import httpx2

    batches: list[list[Any]] = []
    headers = {"content-type": "application/json", "x-api-key": workloads.API_KEY}
    with httpx2.Client(base_url=url, timeout=600) as client:
        for start in range(0, total, MAX_REQUESTS_PER_BATCH):
            count = min(MAX_REQUESTS_PER_BATCH, total - start)
            requests = workloads.full_requests(count, start=start)
            response = client.post("/v1/messages/batches", content=workloads.create_body(requests), headers=headers)
            response.raise_for_status()
            batch_id = response.json()["id"]
            client.get(f"/v1/messages/batches/{batch_id}", headers=headers).raise_for_status()  # ends it
            with client.stream("GET", f"/v1/messages/batches/{batch_id}/results", headers=headers) as stream:
                for _ in stream.iter_raw():
                    pass
            batches.append([batch_id, start, count])
    return batches


def run_land(runner: Runner) -> dict[str, Any]:
    config = runner.config
    print(f"2. land {config.requests:,} results x {config.reps} (+ ours at {config.land_sizes})", flush=True)
    runner.emulator.reset(processing_seconds=0, **LAND_MIX)
    url = runner.emulator.url
    main = _create_ended_batches(url, config.requests)
    warmup = _create_ended_batches(url, WARMUP_RESULTS)[0]
    extra = {size: _create_ended_batches(url, size) for size in config.land_sizes}
    workdir = str(runner.workdir / "land")
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
    for size in config.land_sizes:
        runs[f"ours@{size}"] = []
    for _ in range(config.reps):
        jobs = [("land", c, {"batches": main, "warmup": warmup, "workdir": workdir}) for c in CONTENDERS]
        jobs += [
            ("land", "ours", {"batches": batches, "warmup": warmup, "workdir": workdir, "label": f"@{size:,}"})
            for size, batches in extra.items()
        ]
        for job, figures in zip(jobs, runner.children(jobs), strict=True):
            if figures:
                key = job[1] if "label" not in job[2] else f"ours@{sum(b[2] for b in job[2]['batches'])}"
                runs[key].append(figures)
    runner.emulator.reset()
    errored, expired = LAND_MIX["error_rate"], LAND_MIX["expire_rate"]
    mix = f"{1 - errored - expired:.0%} succeeded / {errored:.0%} errored / {expired:.0%} expired"
    return {
        "params": {"count": config.requests, "reps": config.reps, "sizes": list(config.land_sizes), "mix": mix},
        "rows": _rows(runs),
    }


def run_wait(runner: Runner, k: int) -> dict[str, Any]:
    config = runner.config
    scale = config.poll_interval / 60.0
    print(f"3. wait K={k:,} (batches {config.batch_seconds:g} s, poll {config.poll_interval:g} s)", flush=True)
    # The frozen-heap variant of ours runs at the largest K only: it shows the mitigation for the
    # full-collection pauses measured there, at the cost of one more run.
    contenders = WAIT_CONTENDERS + (("ours_frozen",) if k == max(config.ks) else ())
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    for rep in range(config.wait_reps):
        for contender in contenders:
            params = {
                "k": k,
                "poll_interval": config.poll_interval,
                "processing_seconds": config.batch_seconds,
                "label": f"K={k} rep {rep + 1}",
            }
            if figures := runner.alone("wait", contender, params, processing_seconds=config.batch_seconds):
                runs[contender].append(figures)
    runner.emulator.reset()
    from airflow_provider_claude_batch.polling import DEFAULT_MAX_POLL_SECONDS, DEFAULT_MIN_POLL_SECONDS

    return {
        "params": {
            "k": k,
            "reps": config.wait_reps,
            "poll_interval": config.poll_interval,
            "processing_seconds": config.batch_seconds,
            "ours_min_poll": DEFAULT_MIN_POLL_SECONDS * scale,
            "ours_max_poll": DEFAULT_MAX_POLL_SECONDS * scale,
            "scale": scale,
            "cpus": os.cpu_count(),
        },
        "rows": _rows(runs),
    }


def run_fleet(runner: Runner, k: int) -> dict[str, Any]:
    config = runner.config
    scale = 1 / config.fleet_compression
    batch_seconds = config.fleet_batch_minutes * 60 * scale
    print(
        f"6. fleet K={k:,} (limit 60/min, time compressed {config.fleet_compression:g}x, "
        f"batches {config.fleet_batch_minutes:g} min)",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in FLEET_CONTENDERS}
    params = {
        "k": k,
        "scale": scale,
        "batch_seconds": batch_seconds,
        "deadline_seconds": config.fleet_deadline_minutes * 60 * scale,
        "label": f"K={k}",
    }
    for contender in FLEET_CONTENDERS:
        if figures := runner.alone("fleet", contender, params, processing_seconds=batch_seconds):
            runs[contender].append(figures)
    runner.emulator.reset()
    from airflow_provider_claude_batch.budget import DEFAULT_REQUESTS_PER_MINUTE
    from benchmarks.scenario_fleet import LIMIT_PER_MINUTE

    return {
        "params": {
            "k": k,
            "scale": scale,
            "compression": config.fleet_compression,
            "batch_minutes": config.fleet_batch_minutes,
            "deadline_minutes": config.fleet_deadline_minutes,
            "limit_per_minute": LIMIT_PER_MINUTE,
            "budget_per_minute": DEFAULT_REQUESTS_PER_MINUTE,
        },
        "rows": _rows(runs),
    }


def run_emulator_throughput(runner: Runner) -> dict[str, Any]:
    config = runner.config
    count = min(config.requests, MAX_REQUESTS_PER_BATCH)
    print(f"5. emulator: accept {count:,} requests and serve their results x {config.reps}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"emulator": []}
    for rep in range(config.reps):
        runner.emulator.reset(processing_seconds=0)  # one at a time: the emulator is what is measured
        figures = runner.child("emulator", "emulator", {"count": count, "label": f"rep {rep + 1}"})
        if figures:
            runs["emulator"].append(figures)
    runner.emulator.reset()
    return {"params": {"count": count, "reps": config.reps}, "rows": _rows(runs)}


# -- machine and output ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in (
        "apache-airflow",
        "apache-airflow-task-sdk",
        "anthropic",
        "httpx2",
        "msgspec",
        "pydantic",
        "apache-airflow-providers-anthropic",
        "apache-airflow-providers-common-ai",
        "airflow-provider-claude-batch",
    ):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    ram_gib = None
    try:
        with open("/proc/meminfo") as meminfo:
            ram_gib = int(meminfo.readline().split()[1]) / 1024 / 1024
    except OSError:
        pass
    cpus = os.cpu_count()
    python = platform.python_version()
    return {
        "nproc": cpus,
        "ram_gib": ram_gib,
        "python": python,
        "platform": platform.platform(),
        "packages": packages,
        "summary": f"{cpus} CPUs, {ram_gib or 0:.0f} GiB RAM, Python {python}, {platform.system()} "
        f"{platform.release()}",
    }


def child_env(url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "ANTHROPIC_"))}
    env.update(workloads.connection_env(url))
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
    )
    return env


def main(argv: list[str] | None = None) -> int:
    args, config = parse_args(argv)
    if args.render:
        print(analysis.render_markdown(json.loads(args.render.read_text())))
        return 0
    output_dir = args.output_dir or (RESULTS_DIR if config.mode == "full" else RESULTS_DIR / "quick")
    started = time.monotonic()
    stamp = datetime.now(timezone.utc)
    scenarios: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="claude-batch-bench-") as temp:
        workdir = Path(temp)
        home = workdir / "airflow-home"
        home.mkdir()
        (home / "airflow.cfg").write_text("[core]\nload_examples = False\n")
        with EmulatorProcess(workdir / "emulator.log", emulator_env()) as emulator:
            runner = Runner(config, emulator, workdir, child_env(emulator.url, home))
            print(f"emulator {emulator.url} (pid {emulator.pid}); {config.mode} run", flush=True)
            if "submit" in config.scenarios:
                scenarios["submit"] = run_submit(runner)
            if "land" in config.scenarios:
                scenarios["land"] = run_land(runner)
            if "wait" in config.scenarios:
                for k in config.ks:
                    scenarios[f"wait_k{k}"] = run_wait(runner, k)
            if "emulator" in config.scenarios:
                scenarios["emulator"] = run_emulator_throughput(runner)
            if "fleet" in config.scenarios:
                for k in config.fleet_ks:
                    scenarios[f"fleet_k{k}"] = run_fleet(runner, k)
            errors = runner.errors
    scenarios["polling_24h"] = analysis.polling_analysis()
    wait_keys = sorted((k for k in scenarios if k.startswith("wait_k")), key=lambda k: int(k[6:]))
    big_k = wait_keys[-1] if wait_keys else None
    scenarios["worker_time"] = analysis.worker_time(scenarios, big_k)
    results = {
        "meta": {
            "date": stamp.isoformat(timespec="seconds"),
            "mode": config.mode,
            "config": {key: list(value) if isinstance(value, tuple) else value for key, value in vars(config).items()},
            "machine": machine(),
            "duration_s": time.monotonic() - started,
            "rss_source": "VmHWM of /proc/self/status, reset via /proc/self/clear_refs at the baseline",
        },
        "scenarios": scenarios,
        "targets": analysis.check_targets(scenarios, big_k),
        "errors": errors,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1, sort_keys=False)
    (output_dir / "latest.json").write_text(text)
    (output_dir / f"{stamp.strftime('%Y%m%dT%H%M%SZ')}.json").write_text(text)
    print()
    print(analysis.render_markdown(results))
    print(f"JSON: {output_dir / 'latest.json'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
