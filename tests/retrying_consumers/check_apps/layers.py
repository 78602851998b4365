"""A project's own subclass of the channels-redis layer."""

from channels_redis.core import RedisChannelLayer


class ProjectLayer(RedisChannelLayer):
    """Checked like its base."""
