"""Moved to app/modules/spec.py; this name stays until the last import of it is rewritten."""

from app.modules.spec import Assembly, Module, ModuleContext, Store

__all__ = ["Assembly", "Module", "ModuleContext", "Store"]
