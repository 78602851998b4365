"""Layer 9, operations: the audit trail, deletion, metrics, notifications,
reports, JSON log formatting and the admin pages' classes.
"""
