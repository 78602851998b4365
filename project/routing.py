"""Websocket URL routes and worker channel routes of the project."""

from django.urls import path

from realtime.consumers import PingWorkerConsumer, RealtimeConsumer
from realtime.examples import EXAMPLES_CHANNEL, ExampleTasksConsumer

WEBSOCKET_ROUTES = [
    path("ws/tasks/", RealtimeConsumer.as_asgi()),
]

CHANNEL_ROUTES = {
    PingWorkerConsumer.channel: PingWorkerConsumer.as_asgi(),
    EXAMPLES_CHANNEL: ExampleTasksConsumer.as_asgi(),
}
