"""URLs of the library: ``include("retrying_consumers.urls")`` at the site root."""

from django.urls import path

from .ops.metrics import metrics_view

urlpatterns = [
    path("metrics", metrics_view, name="retrying-consumers-metrics"),
]
