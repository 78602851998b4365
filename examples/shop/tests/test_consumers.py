"""PaymentConsumer through its real retry path, with perform (no worker, no Redis)."""

from __future__ import annotations

import pytest
from retrying_consumers.testing import perform

from orders import payments
from orders.consumers import PaymentConsumer


@pytest.mark.django_db(transaction=True)
def test_a_charge_succeeds() -> None:
    outcome = perform(
        PaymentConsumer, "payment.charge", {"order_id": 1, "amount_cents": 500}
    )
    assert outcome.succeeded
    assert outcome.attempts == 1
    assert outcome.result == {"charge_id": "ch_1_500"}


@pytest.mark.django_db(transaction=True)
def test_a_gateway_outage_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def flaky_charge(order_id: int, amount_cents: int) -> str:
        calls.append(order_id)
        if len(calls) == 1:
            raise payments.GatewayUnavailable("gateway timed out")
        return "ch_ok"

    monkeypatch.setattr(payments, "charge", flaky_charge)
    outcome = perform(
        PaymentConsumer, "payment.charge", {"order_id": 2, "amount_cents": 100}
    )
    assert (outcome.status, outcome.attempts) == ("succeeded", 2)
    assert outcome.result == {"charge_id": "ch_ok"}


@pytest.mark.django_db(transaction=True)
def test_an_outage_that_lasts_ends_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(order_id: int, amount_cents: int) -> str:
        raise payments.GatewayUnavailable("gateway down")

    monkeypatch.setattr(payments, "charge", down)
    outcome = perform(
        PaymentConsumer, "payment.charge", {"order_id": 3, "amount_cents": 100}
    )
    assert (outcome.status, outcome.attempts) == ("dead", 3)
    assert outcome.error_class == "GatewayUnavailable"


@pytest.mark.django_db(transaction=True)
def test_nothing_to_charge_is_not_retried() -> None:
    outcome = perform(
        PaymentConsumer, "payment.charge", {"order_id": 4, "amount_cents": 0}
    )
    assert (outcome.status, outcome.attempts) == ("dead", 1)
    assert outcome.error_class == "GiveUp"
