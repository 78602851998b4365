"""Layer 3, the channel layer as a wake-up line: doorbell rings and cancel notices.

A ring only says that a stored task is due; the task itself is in the store.
"""
