"""Layer 8, the ``django.tasks`` backend: ``ChannelsBackend`` and its consumer."""
