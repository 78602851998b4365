"""Layer 4, progress for the browser: ``report_progress`` and the task events.

Events go to each task's channel-layer group, where the task websocket hears them.
"""
