"""Moved to app/split/cluster.py; the old name stays until
the last import of it is rewritten."""

from app.split.cluster import Child, ClusterError, Plan, free_port, plan, start_nats, stop_nats

__all__ = ["Child", "ClusterError", "Plan", "free_port", "plan", "start_nats", "stop_nats"]
