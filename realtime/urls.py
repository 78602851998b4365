from django.urls import path

from realtime import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
]
