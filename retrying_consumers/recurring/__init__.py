"""Layer 6, recurring tasks: ``@periodic`` schedules and the worker's ticking."""
