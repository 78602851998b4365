"""Layer 1, the ground rules: exceptions, settings, the retry policy, payload checks.

Imports nothing of the library but its other modules here.
"""
