"""The work itself, kept apart from the consumer so it can be swapped in tests."""

from __future__ import annotations


class GatewayUnavailable(ConnectionError):
    """The payment gateway did not answer; worth another try."""


def charge(order_id: int, amount_cents: int) -> str:
    """Charge an order at the payment gateway and return the charge's id."""
    return f"ch_{order_id}_{amount_cents}"
