"""Stock levels and reorder decisions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StockItem:
    sku: str
    on_hand: int
    reorder_point: int
    reorder_quantity: int


def needs_reorder(item: StockItem) -> bool:
    """True when stock has fallen to the reorder point."""
    return item.on_hand <= item.reorder_point


def reserve(item: StockItem, quantity: int) -> StockItem:
    """Take ``quantity`` out of stock; refuses to go below zero."""
    if quantity > item.on_hand:
        raise ValueError(f"only {item.on_hand} of {item.sku} on hand")
    return StockItem(item.sku, item.on_hand - quantity, item.reorder_point, item.reorder_quantity)


def reorder_plan(items: list[StockItem]) -> dict[str, int]:
    """Quantities to order, by SKU, for every item at or under its reorder point."""
    return {item.sku: item.reorder_quantity for item in items if needs_reorder(item)}
