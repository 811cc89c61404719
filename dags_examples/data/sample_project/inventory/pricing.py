"""Price arithmetic for order lines."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def line_total(unit_price: Decimal, quantity: int) -> Decimal:
    """Price of ``quantity`` units, rounded to cents."""
    if quantity < 0:
        raise ValueError("quantity cannot be negative")
    return (unit_price * quantity).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def apply_discount(amount: Decimal, percent: int) -> Decimal:
    """``amount`` less ``percent`` per cent (0-100)."""
    if not 0 <= percent <= 100:
        raise ValueError("percent must be between 0 and 100")
    return (amount * (100 - percent) / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def add_vat(amount: Decimal, rate: Decimal = Decimal("0.20")) -> Decimal:
    """``amount`` plus value-added tax at ``rate``."""
    return (amount * (1 + rate)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
