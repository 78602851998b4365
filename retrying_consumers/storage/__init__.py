"""Layer 2, the durable task store: its SQL, the store API and the writers.

Claims and leases, outcomes, follow-ups, limiters, retention, and outage
logging (health). Imports ``core`` and ``models`` only.
"""
