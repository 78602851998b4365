"""Retries, backoff, dead-lettering and durable task state for Django Channels."""
