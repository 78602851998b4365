"""URLs: the dashboard, Django's login views, the admin and the metrics."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("", include("realtime.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # /metrics for Prometheus (staff session or METRICS_TOKEN bearer token).
    path("", include("retrying_consumers.urls")),
]
