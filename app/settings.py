"""Moved to app/kernel/settings.py; this name stays until the last import of it is rewritten."""

from app.kernel.settings import PREFIX, Settings, SettingsError

__all__ = ["PREFIX", "Settings", "SettingsError"]
