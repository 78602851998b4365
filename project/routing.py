"""Websocket URL routes and worker channel routes of the project."""

from django.urls import path

from realtime.consumers import PingWorkerConsumer, RealtimeConsumer
from realtime.examples import EXAMPLES_CHANNEL, ExampleTasksConsumer
from retrying_consumers.tasks_consumer import django_task_routes

WEBSOCKET_ROUTES = [
    path("ws/tasks/", RealtimeConsumer.as_asgi()),
]

CHANNEL_ROUTES = {
    # Every queue of every ChannelsBackend in settings.TASKS (Django's @task).
    **django_task_routes(),
    PingWorkerConsumer.channel: PingWorkerConsumer.as_asgi(),
    EXAMPLES_CHANNEL: ExampleTasksConsumer.as_asgi(),
}
