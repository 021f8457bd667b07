"""Shared library code: one module per concern (runtime, statistics, models, metrics, training)."""
