"""A view that enqueues the receipt @task, and a page that watches it."""

from __future__ import annotations

import uuid

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from .tasks import send_receipt


@require_POST
def send_receipt_view(request: HttpRequest, order_id: int) -> JsonResponse:
    # Owned by the user who asked (nobody when logged out): theirs to watch.
    result = send_receipt.owned_by(request.user).enqueue(order_id)
    return JsonResponse(
        {"task_id": result.id, "progress": f"/receipts/{result.id}/"}, status=202
    )


@login_required
def receipt_progress_view(request: HttpRequest, task_id: uuid.UUID) -> HttpResponse:
    """The receipt task's live progress bar ({% task_progress %})."""
    return render(request, "orders/receipt_progress.html", {"task_id": task_id})
