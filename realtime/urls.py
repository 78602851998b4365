from django.urls import path

from realtime import progress_example, schedules, task_page, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("tasks/<uuid:task_id>/", views.task_detail, name="task-detail"),
    path("tasks/<uuid:task_id>/live/", task_page.task_live, name="task-live"),
    path("tasks/<uuid:task_id>/<str:action>/", views.task_action, name="task-action"),
    path("chart/", views.chart, name="chart"),
    path("bulk/<str:action>/", views.bulk_action, name="bulk-action"),
    path("examples/start/", views.start_example, name="start-example"),
    path("schedules/", schedules.schedules, name="schedules"),
    path("progress/", progress_example.progress_page, name="progress-example"),
]
