"""The ``claude-batch`` command line.

Each subcommand is a pair of functions (one adds its arguments, one runs it) registered in
``SUBCOMMANDS``, so new subcommands are one entry away. Imports of heavy modules happen inside
the run functions, keeping ``claude-batch --help`` instant and free of Airflow.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_claude_batch.testing.emulator import EmulatorConfig

__all__ = ["SUBCOMMANDS", "build_parser", "main"]


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``claude-batch emulator``; unset flags fall back to the config file and env."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind, 0 = any free port (default 8765)")
    parser.add_argument("--processing-seconds", type=float, help="real seconds a batch takes (default 2)")
    parser.add_argument("--cancel-seconds", type=float, help="real seconds a cancel takes (default 0.5)")
    parser.add_argument("--time-scale", type=float, help="divides the 24 h expiry and 29 d archival windows")
    parser.add_argument("--api-key", help="accept only this API key (default: any non-empty key)")
    parser.add_argument("--seed", type=int, help="seed for fault injection and random rates")
    fleet = parser.add_argument_group("fleet limits of the Message Batches API (all off by default)")
    fleet.add_argument(
        "--rate-limit-rpm", type=int, metavar="N", help="calls per rolling window across every batch endpoint"
    )
    fleet.add_argument(
        "--rate-limit-window-seconds", type=float, metavar="S", help="the rolling window of --rate-limit-rpm (60)"
    )
    fleet.add_argument(
        "--max-queued-requests", type=int, metavar="N", help="processing-queue cap: a create above it gets 429"
    )
    fleet.add_argument(
        "--propagation-delay-seconds",
        type=float,
        metavar="S",
        help="a new batch answers 404 on retrieve and results for this long",
    )
    parser.add_argument("--config", metavar="FILE.json", help="JSON file with any EmulatorConfig fields")


def _fleet_limits(config: EmulatorConfig) -> list[str]:
    """The fleet limits an emulator config turns on, in words (for the startup banner)."""
    limits = []
    if config.rate_limit_rpm is not None:
        limits.append(f"{config.rate_limit_rpm} batch API calls per {config.rate_limit_window_seconds:g} s")
    if config.max_queued_requests is not None:
        limits.append(f"at most {config.max_queued_requests:,} requests queued in unended batches")
    if config.propagation_delay_seconds:
        limits.append(f"new batches answer 404 for {config.propagation_delay_seconds:g} s")
    return limits


def run_emulator_command(args: argparse.Namespace) -> int:
    """Serve the emulator in the foreground until Ctrl-C / SIGTERM."""
    from airflow_provider_claude_batch.testing.emulator import load_config, run_emulator

    config = load_config(
        args.config,
        processing_seconds=args.processing_seconds,
        cancel_seconds=args.cancel_seconds,
        time_scale=args.time_scale,
        api_key=args.api_key,
        seed=args.seed,
        rate_limit_rpm=args.rate_limit_rpm,
        rate_limit_window_seconds=args.rate_limit_window_seconds,
        max_queued_requests=args.max_queued_requests,
        propagation_delay_seconds=args.propagation_delay_seconds,
    )

    def announce(url: str) -> None:
        key = config.api_key or "test-key"
        print(f"Claude API emulator listening on {url}", flush=True)
        print(f"  admin:      {url}/_emulator/state  (POST {url}/_emulator/config, /_emulator/reset)")
        print(f"  SDK:        anthropic.Anthropic(api_key={key!r}, base_url={url!r})")
        print(
            "  Airflow:    export AIRFLOW_CONN_CLAUDE_DEFAULT="
            f'\'{{"conn_type": "claude", "password": "{key}", "host": "{url}"}}\''
        )
        for limit in _fleet_limits(config):
            print(f"  limit:      {limit}")
        print(
            f"  batches end after {config.processing_seconds:g} s; press Ctrl-C to stop.",
            flush=True,
        )

    run_emulator(config, args.host, args.port, on_ready=announce)
    return 0


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``claude-batch demo``."""
    from airflow_provider_claude_batch.demo import DEFAULT_DAGS

    parser.add_argument("dag_ids", nargs="*", default=list(DEFAULT_DAGS), help="example DAGs to run")
    parser.add_argument("--dags-folder", default="dags_examples", help="folder of DAG files (default dags_examples)")
    parser.add_argument(
        "--airflow-home", default=".demo/airflow", help="throwaway AIRFLOW_HOME with SQLite (default .demo/airflow)"
    )
    parser.add_argument("--processing-seconds", type=float, default=3.0, help="how long each batch takes")


def run_demo_command(args: argparse.Namespace) -> int:
    """Run the example DAGs end to end on SQLite Airflow and the emulator."""
    from pathlib import Path

    from airflow_provider_claude_batch.demo import run_demo

    return run_demo(
        Path(args.dags_folder).resolve(), Path(args.airflow_home).resolve(), args.dag_ids, args.processing_seconds
    )


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 (by any library) to stderr for a while."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``claude-batch audit``."""
    parser.add_argument("--dags-folder", required=True, help="folder of DAG files to parse, as Airflow would")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    parser.add_argument(
        "--airflow-home",
        help="Airflow home whose claude_batch_results/ holds the manifests of past runs, used to measure "
        "tokens per run (default $AIRFLOW_HOME, else ~/airflow)",
    )
    parser.add_argument(
        "--fail-on-violation", action="store_true", help="exit with status 1 when any task is a VIOLATION (for CI)"
    )


def run_audit_command(args: argparse.Namespace) -> int:
    """Print, for every Claude task, its route, the rule's route, the verdict and the monthly cost."""
    from airflow_provider_claude_batch.audit import audit_folder, render_json, render_table

    # Parsing imports Airflow, which logs to stdout: keep stdout for the report (JSON must parse).
    with _stdout_to_stderr():
        report = audit_folder(args.dags_folder, args.airflow_home)
    print(render_json(report) if args.format == "json" else render_table(report))
    if args.fail_on_violation and any(task.verdict == "VIOLATION" for task in report.tasks):
        return 1
    return 0


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``claude-batch check``."""
    parser.add_argument("path", help="a DAG file or a folder of DAG files")


def run_check_command(args: argparse.Namespace) -> int:
    """List every problem of the Claude tasks in a DAG file or folder, and a cost quote; 1 on any problem."""
    from airflow_provider_claude_batch.dag_check import check_path, render

    with _stdout_to_stderr():
        report = check_path(args.path)
    print(render(report))
    return 1 if report.problems else 0


Subcommand = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

SUBCOMMANDS: dict[str, Subcommand] = {
    "emulator": (
        "run a local emulator of the Anthropic Message Batches and Messages APIs",
        add_emulator_arguments,
        run_emulator_command,
    ),
    "demo": (
        "run the example DAGs end to end, offline (SQLite Airflow + the emulator, no API key)",
        add_demo_arguments,
        run_demo_command,
    ),
    "audit": (
        "list every Claude task's route, the route the rule gives, the verdict and the monthly cost",
        add_audit_arguments,
        run_audit_command,
    ),
    "check": (
        "check every Claude task of a DAG file or folder offline: arguments, requests, routing; quote the cost",
        add_check_arguments,
        run_check_command,
    ),
}
"""name -> (help, add_arguments, run). Add an entry to add a subcommand."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claude-batch", description="Tools for airflow-provider-claude-batch.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, run) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``claude-batch`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
