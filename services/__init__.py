"""The gateway's services. Each package: service.py (op table), handlers.py, store.py (JetStream)."""
