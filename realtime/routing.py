"""The task websocket's route, for a project's ``asgi.py``.

Wrap it as the demo project does (project/asgi.py), so that the socket is
origin-checked and carries the session's user::

    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator

    import realtime.routing

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(realtime.routing.websocket_urlpatterns))
        ),
    })
"""

from django.urls import path

from realtime.consumers import RealtimeConsumer

websocket_urlpatterns = [
    path("ws/tasks/", RealtimeConsumer.as_asgi()),
]
