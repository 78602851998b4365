"""ASGI entry point: ``daphne project.asgi:application``.

HTTP goes to Django; websockets are origin-checked against ``ALLOWED_HOSTS`` and
carry the Django session user; ``channel`` messages sent to worker channels reach
the consumers named in ``CHANNEL_ROUTES`` when a ``runworker`` serves them.

Bad settings, and a database that does not answer or is not migrated, stop the
import with one ``error:`` line and exit status 2.
"""

import os

from django.core.asgi import get_asgi_application

from project.config import check_database
from project.errors import exit_on_bad_config

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# Django must be set up before anything imports models.
django_asgi_app = exit_on_bad_config(get_asgi_application)
# A database without the library's tables would fail every page that reads
# tasks: say so once, at start.
exit_on_bad_config(check_database)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from project.routing import CHANNEL_ROUTES, WEBSOCKET_ROUTES  # noqa: E402
from realtime.tuning import tune_garbage_collector  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(WEBSOCKET_ROUTES))
        ),
        "channel": ChannelNameRouter(CHANNEL_ROUTES),
    }
)

# Full garbage collections would walk everything loaded above, and every
# socket's objects, on each pass; with many sockets they were most of the
# progress tail (docs/benchmarks.md).
tune_garbage_collector()
