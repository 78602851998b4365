"""Layer 7, running tasks: the ``runworker`` worker and the consumer's side.

The worker takes rings (intake), sweeps due retries (scheduling) and expired
leases (recovery); a consumer's ``RetryMixin`` (mixin) claims and runs each
attempt (attempts) and records its outcome (recording, outcomes).
"""
