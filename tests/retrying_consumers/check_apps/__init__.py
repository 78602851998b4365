"""ASGI applications for the system-check tests (``test_checks.py``)."""
