"""An asgi module that stops its process at import, as exit_on_bad_config does."""

raise SystemExit(2)
