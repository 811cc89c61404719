"""The suite's options: sizes and repetitions of a run (:class:`Config`), the ``--quick`` set, the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of one run (full by default; ``--quick`` shrinks everything)."""

    mode: str = "full"
    requests: int = 100_000
    reps: int = 3
    land_sizes: tuple[int, ...] = (10_000, 250_000)
    ks: tuple[int, ...] = (200, 1000)
    wait_reps: int = 1
    poll_interval: float = 5.0
    batch_seconds: float = 20.0
    jobs: int = 1
    # The fleet (scenario 6): K batches against a 60-per-minute limit, time compressed ``fleet_compression`` times.
    fleet_ks: tuple[int, ...] = (300, 1000, 5000)
    fleet_compression: float = 12.0
    fleet_batch_minutes: float = 5.0
    fleet_deadline_minutes: float = 10.0
    scenarios: tuple[str, ...] = ("submit", "land", "wait", "emulator", "fleet")


DESCRIPTION = "Run the benchmark suite (see benchmarks/README.md); --quick for a smoke run."

QUICK = Config(
    mode="quick",
    requests=2_000,
    reps=1,
    land_sizes=(500, 5_000),
    ks=(10,),
    poll_interval=0.5,
    batch_seconds=2.0,
    jobs=3,
    fleet_ks=(30,),
    fleet_compression=60.0,
    fleet_batch_minutes=1.0,
    fleet_deadline_minutes=3.0,
)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run, about a minute)")
    parser.add_argument("--only", help="comma-separated scenarios to run: submit,land,wait,emulator,fleet")
    parser.add_argument(
        "--requests", type=int, help="requests submitted / results landed / served by the emulator (default 100000)"
    )
    parser.add_argument("--reps", type=int, help="repetitions of submit, land and emulator (default 3)")
    parser.add_argument("--land-sizes", help="extra result counts landed by ours (default 10000,250000)")
    parser.add_argument("--ks", help="concurrent deferred batches (default 200,1000)")
    parser.add_argument("--wait-reps", type=int, help="repetitions of each wait run (default 1)")
    parser.add_argument("--poll-interval", type=float, help="fixed poll of official/common-ai, s (default 5)")
    parser.add_argument("--batch-seconds", type=float, help="how long each waited batch runs, s (default 20)")
    parser.add_argument("--fleet-ks", help="deferred batches of the fleet scenario (default 300,1000,5000)")
    parser.add_argument(
        "--fleet-compression", type=float, help="how many times faster than real time the fleet runs (default 12)"
    )
    parser.add_argument("--fleet-batch-minutes", type=float, help="real minutes each fleet batch runs (default 5)")
    parser.add_argument(
        "--fleet-deadline-minutes", type=float, help="real minutes before the fleet's triggers give up (default 10)"
    )
    parser.add_argument("--jobs", type=int, help="children at a time (default 1; quick 3: figures then overlap)")
    parser.add_argument("--output-dir", type=Path, help="where latest.json goes (default benchmarks/results)")
    parser.add_argument("--render", type=Path, metavar="RESULTS.json", help="print the table of a results file")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    overrides: dict[str, Any] = {}
    if args.only:
        overrides["scenarios"] = tuple(s.strip() for s in args.only.split(","))
    if args.requests:
        overrides["requests"] = args.requests
    if args.reps:
        overrides["reps"] = args.reps
    if args.land_sizes is not None:
        overrides["land_sizes"] = tuple(int(s) for s in args.land_sizes.split(",") if s)
    if args.ks:
        overrides["ks"] = tuple(int(s) for s in args.ks.split(","))
    if args.wait_reps:
        overrides["wait_reps"] = args.wait_reps
    if args.poll_interval:
        overrides["poll_interval"] = args.poll_interval
    if args.batch_seconds:
        overrides["batch_seconds"] = args.batch_seconds
    if args.fleet_ks:
        overrides["fleet_ks"] = tuple(int(s) for s in args.fleet_ks.split(","))
    for name in ("fleet_compression", "fleet_batch_minutes", "fleet_deadline_minutes"):
        if getattr(args, name):
            overrides[name] = getattr(args, name)
    if args.jobs:
        overrides["jobs"] = args.jobs
    return args, replace(config, **overrides)
