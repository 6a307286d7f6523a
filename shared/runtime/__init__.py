"""Layer 4, the service framework: the nats.micro adapter (endpoint), the runner, calls between
services (peers), memory pressure. Imports every layer below it; never a service.
"""
