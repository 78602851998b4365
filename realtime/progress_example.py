"""An example of the progress widget in a page of one's own.

A logged-in user (staff or not) starts one of the example tasks, owned by
them, and watches it under the button with ``{% task_progress %}``. The
template, realtime/progress_example.html, extends nothing of the dashboard: it
is what a project's own page looks like.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from realtime.examples import EXAMPLES, EXAMPLES_CHANNEL
from retrying_consumers import enqueue
from retrying_consumers.models import TaskRecord

#: What the page offers, with payloads short enough to watch to the end.
PAGE_EXAMPLES = {
    "long": {"label": "Export (reports progress)", "payload": {"steps": 20}},
    "flaky": {"label": "Sync (fails once, retries)", "payload": {"fail_times": 1}},
    "doomed": {"label": "Import (always fails)", "payload": {}},
}
SHOWN = 5


@login_required
def progress_page(request: HttpRequest) -> HttpResponse:
    """GET: the buttons and the user's latest example tasks; POST: start one."""
    if request.method == "POST":
        kind = request.POST.get("example", "")
        if kind in PAGE_EXAMPLES and kind in EXAMPLES:
            enqueue(
                EXAMPLES_CHANNEL,
                f"example.{kind}",
                PAGE_EXAMPLES[kind]["payload"],
                user=request.user,
            )
        return HttpResponseRedirect(reverse("progress-example"))
    tasks = TaskRecord.objects.filter(
        owner_id=request.user.pk, channel=EXAMPLES_CHANNEL
    ).order_by("-created_at")[:SHOWN]
    return render(
        request,
        "realtime/progress_example.html",
        {"examples": PAGE_EXAMPLES, "tasks": [task.pk for task in tasks]},
    )
