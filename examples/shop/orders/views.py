"""A view that enqueues the receipt @task and answers with its id."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from .tasks import send_receipt


@require_POST
def send_receipt_view(request: HttpRequest, order_id: int) -> JsonResponse:
    result = send_receipt.enqueue(order_id)
    return JsonResponse({"task_id": result.id}, status=202)
