"""ASGI entry point of the shop, for daphne and runworker (integration step 4)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
django_asgi_app = get_asgi_application()  # before anything imports models

import realtime.routing  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from retrying_consumers.tasks_consumer import django_task_routes  # noqa: E402

from orders.consumers import PaymentConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Task progress for the pages' {% task_progress %} elements.
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(realtime.routing.websocket_urlpatterns))
        ),
        "channel": ChannelNameRouter(
            {
                **django_task_routes(),  # the TASKS queues
                "payments": PaymentConsumer.as_asgi(),
            }
        ),
    }
)
