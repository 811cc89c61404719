"""What a task was actually billed: each landed row at the price of the route that produced it.

A batch task whose rest was finished by a synchronous rescue holds rows of both routes: the rows
the batch finished cost the batch price, the rescued ones the full price. :func:`bill` prices each
route's usage at its own rate (from :mod:`~airflow_provider_claude_batch.pricing`) and says what
that saved against sending every row synchronously.

This module imports nothing from Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_provider_claude_batch.pricing import PRICES_AS_OF, TokenUsage, cost_of, round_usd
from airflow_provider_claude_batch.results import ROUTES, ResultTally

__all__ = ["Bill", "RouteBill", "bill"]


@dataclass(frozen=True)
class RouteBill:
    """The rows one route produced, their tokens, and what they cost at that route's price."""

    route: str
    rows: int
    usage_by_model: dict[str, TokenUsage]
    usd: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "usage_by_model": {model: usage.as_dict() for model, usage in self.usage_by_model.items()},
            "usd": round_usd(self.usd),
        }


@dataclass(frozen=True)
class Bill:
    """Every route's share of a task's rows, the total billed, and the saving against all-synchronous."""

    routes: tuple[RouteBill, ...]
    billed_usd: Decimal
    all_sync_usd: Decimal
    unpriced_models: tuple[str, ...]

    @property
    def saved_usd(self) -> Decimal:
        """What the rows cost less than they would have on the synchronous route alone."""
        return self.all_sync_usd - self.billed_usd

    @property
    def mixed(self) -> bool:
        """Rows of more than one route (a rescued batch)."""
        return sum(1 for route in self.routes if route.rows) > 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "by_route": {route.route: route.as_dict() for route in self.routes},
            "billed_usd": round_usd(self.billed_usd),
            "all_sync_usd": round_usd(self.all_sync_usd),
            "saved_usd": round_usd(self.saved_usd),
            "prices_as_of": PRICES_AS_OF.isoformat(),
            "unpriced_models": list(self.unpriced_models),
        }

    def summary(self) -> str:
        """``"$0.0412 billed: batch $0.0100 for 90 row(s), sync $0.0312 for 10 row(s); $0.0200 saved ..."``."""
        parts = ", ".join(f"{route.route} ${route.usd:.4f} for {route.rows} row(s)" for route in self.routes)
        return (
            f"${self.billed_usd:.4f} billed: {parts}; ${self.saved_usd:.4f} saved against sending every row "
            f"on the synchronous route (${self.all_sync_usd:.4f})"
        )


def bill(tally: ResultTally) -> Bill:
    """Price each route's rows of ``tally`` at that route's price (batch rows at half the sync price)."""
    routes = []
    unpriced: set[str] = set()
    for route in sorted(tally.rows_by_route, key=lambda name: ROUTES.index(name) if name in ROUTES else len(ROUTES)):
        usage = {model: TokenUsage(*totals) for model, totals in sorted(tally.usage_by_route.get(route, {}).items())}
        cost = cost_of(usage)
        unpriced.update(cost.unpriced_models)
        routes.append(
            RouteBill(route, tally.rows_by_route[route], usage, cost.sync_usd if route == "sync" else cost.batch_usd)
        )
    every_row = cost_of({model: TokenUsage(*totals) for model, totals in tally.usage_by_model.items()})
    return Bill(
        routes=tuple(routes),
        billed_usd=sum((route.usd for route in routes), Decimal(0)),
        all_sync_usd=every_row.sync_usd,
        unpriced_models=tuple(sorted(unpriced | set(every_row.unpriced_models))),
    )
