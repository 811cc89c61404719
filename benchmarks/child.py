"""One measured repetition in a fresh process: ``python -m benchmarks.child SPEC.json``.

A fresh interpreter per repetition keeps figures independent: no client, cache, connection pool
or allocator arena survives from one repetition or contender to the next, and peak RSS is the
process's own. The spec names the scenario, the contender and its parameters; the figures (or
the error) are written as JSON to the spec's ``output`` path.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any


def main(argv: list[str]) -> int:
    with open(argv[1]) as handle:
        spec: dict[str, Any] = json.load(handle)
    try:
        if spec["scenario"] == "submit":
            from benchmarks import scenario_submit as scenario
        elif spec["scenario"] == "land":
            from benchmarks import scenario_land as scenario  # type: ignore[no-redef]
        elif spec["scenario"] == "wait":
            from benchmarks import scenario_wait as scenario  # type: ignore[no-redef]
        elif spec["scenario"] == "fleet":
            from benchmarks import scenario_fleet as scenario  # type: ignore[no-redef]
        elif spec["scenario"] == "emulator":
            from benchmarks import scenario_emulator as scenario  # type: ignore[no-redef]
        else:
            raise ValueError(f"unknown scenario {spec['scenario']!r}")
        outcome: dict[str, Any] = {"ok": True, "figures": scenario.run(spec["contender"], spec["params"])}
        code = 0
    except Exception as error:
        outcome = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        code = 1
    with open(spec["output"], "w") as handle:
        json.dump(outcome, handle)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
