"""The single entry point: mounts each module's routes under /api/<module>, request ids,
one error shape, health and readiness."""

from app.gateway.gateway import build_gateway

__all__ = ["build_gateway"]
