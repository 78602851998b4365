"""URLs of the shop (integration step 5, plus the order view)."""

from django.contrib import admin
from django.urls import include, path

from orders import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("orders/<int:order_id>/receipt/", views.send_receipt_view),
    path("receipts/<uuid:task_id>/", views.receipt_progress_view),
    path("", include("retrying_consumers.urls")),  # /metrics
]
