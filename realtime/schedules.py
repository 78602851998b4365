"""The schedules page: every periodic task, its next run and how its last went;
and the limits per message type, with what runs and waits under each."""

from __future__ import annotations

import dataclasses

from django.contrib.auth.decorators import login_required, user_passes_test
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from retrying_consumers.core.exceptions import ConfigurationError
from retrying_consumers.recurring.ticking import schedule_states
from retrying_consumers.storage.limits import declared_limits

#: Seconds between two refreshes of the page's table by its script.
REFRESH_SECONDS = 5


@login_required
@user_passes_test(lambda user: user.is_staff)
def schedules(request: HttpRequest) -> HttpResponse:
    """Staff only: schedules are the deployment's, and their tasks nobody's.

    ``?format=json`` gives the same rows as ``tasks schedules --json``.
    """
    try:
        states = schedule_states()
    except ConfigurationError as err:
        problem, rows = str(err), []
    else:
        problem, rows = "", [state.as_dict() for state in states]
    limits = [dataclasses.asdict(info) for info in declared_limits()]
    if request.GET.get("format") == "json":
        return JsonResponse({"schedules": rows, "problem": problem, "limits": limits})
    context = {
        "schedules": rows,
        "problem": problem,
        "refresh": REFRESH_SECONDS,
        "limits": limits,
    }
    return render(request, "realtime/schedules.html", context)
