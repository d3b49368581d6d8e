"""Notifications: tells users what happened to their payments. Owns the notifications database."""
