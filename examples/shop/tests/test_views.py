"""The order view enqueues the receipt task, which is stored and (EAGER) run."""

from __future__ import annotations

import pytest
from django.tasks import TaskResultStatus
from django.test import Client

from orders.tasks import send_receipt


@pytest.mark.django_db(transaction=True)
def test_the_view_enqueues_the_receipt(client: Client) -> None:
    response = client.post("/orders/42/receipt/")
    assert response.status_code == 202
    stored = send_receipt.get_result(response.json()["task_id"])
    assert stored.status == TaskResultStatus.SUCCESSFUL
    assert stored.return_value == "receipt-42"
    assert stored.args == [42]


def test_the_view_wants_a_post(client: Client) -> None:
    assert client.get("/orders/42/receipt/").status_code == 405
