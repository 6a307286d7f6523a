"""Layer 0, the ground floor: errors and wire codes, subjects, codecs, settings, telemetry, safe patterns.

Imports nothing else of ``esdb_gater``; every other layer may import it.
"""
