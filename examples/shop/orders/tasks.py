"""A Django @task, run by the library's ChannelsBackend (integration step 6)."""

from __future__ import annotations

from django.tasks import task


@task
def send_receipt(order_id: int) -> str:
    """Send the receipt of an order; returns the receipt's reference."""
    return f"receipt-{order_id}"
