"""The receipt @task, run at enqueue by ChannelsBackend's EAGER option."""

from __future__ import annotations

import pytest
from django.tasks import TaskResultStatus

from orders.tasks import send_receipt


@pytest.mark.django_db(transaction=True)
def test_the_receipt_task_runs_at_enqueue() -> None:
    result = send_receipt.enqueue(9)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == "receipt-9"
