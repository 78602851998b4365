"""Layer 5, the producer: ``enqueue`` and friends store a task, then ring."""
