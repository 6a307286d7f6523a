"""The security suite (issue 10, docs/security.md "Threat model"): every attack replayed over the wire."""
