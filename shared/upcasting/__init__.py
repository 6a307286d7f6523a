"""Schemas and upcasters: pure steps (steps.py) and the registry that loads them from KV (registry.py)."""
