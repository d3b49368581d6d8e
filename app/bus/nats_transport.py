"""Moved to app/split/nats_transport.py; the old name stays until
the last import of it is rewritten."""

from app.split.nats_transport import NatsTransport

__all__ = ["NatsTransport"]
