"""A worker consumer that retries a charge when the gateway is briefly away."""

from __future__ import annotations

from typing import Any

from channels.consumer import AsyncConsumer
from retrying_consumers import GiveUp, RetryMixin, RetryPolicy
from tenacity import wait_fixed

from . import payments


class PaymentConsumer(RetryMixin, AsyncConsumer):  # RetryMixin first
    retry_policy = RetryPolicy(max_attempts=3, wait=wait_fixed(5))

    async def payment_charge(self, message: dict[str, Any]) -> dict[str, Any]:
        payload = message["payload"]
        if payload["amount_cents"] <= 0:
            raise GiveUp("nothing to charge")
        # GatewayUnavailable (a ConnectionError) is retried by the policy.
        charge_id = payments.charge(payload["order_id"], payload["amount_cents"])
        return {"charge_id": charge_id}
