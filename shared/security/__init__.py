"""Layer 3, the trust boundary: capability tokens, the authorization table, NATS accounts, HMAC
signing. Imports ``core``, ``models`` and ``log``.
"""
