"""An asgi module that cannot be imported."""

import no_such_module_for_checks  # noqa: F401

application = None
