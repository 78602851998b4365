"""Websocket URL routes and worker channel routes of the project."""

from realtime.consumers import PingWorkerConsumer
from realtime.examples import EXAMPLES_CHANNEL, ExampleTasksConsumer
from realtime.routing import websocket_urlpatterns
from retrying_consumers.djangotasks.tasks_consumer import django_task_routes

WEBSOCKET_ROUTES = [*websocket_urlpatterns]

CHANNEL_ROUTES = {
    # Every queue of every ChannelsBackend in settings.TASKS (Django's @task).
    **django_task_routes(),
    PingWorkerConsumer.channel: PingWorkerConsumer.as_asgi(),
    EXAMPLES_CHANNEL: ExampleTasksConsumer.as_asgi(),
}
