"""Moved to app/split/discovery.py; the old name stays until
the last import of it is rewritten."""

from app.split.discovery import Announcer, Directory, Instance

__all__ = ["Announcer", "Directory", "Instance"]
