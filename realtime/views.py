"""The dashboard page."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """The page where a person watches tasks live."""
    return render(request, "realtime/dashboard.html")
