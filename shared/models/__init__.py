"""Wire models: one module per service, ``<Op>Request`` / ``<Op>Response`` per subject."""
