"""Moved to app/split/forwarding.py; the old name stays until
the last import of it is rewritten."""

from app.split.forwarding import Forwarder, forwarding_route

__all__ = ["Forwarder", "forwarding_route"]
