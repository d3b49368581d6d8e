"""Shipping: the module the README's "Adding a module" walk-through builds, step by step.

It lives in the tests so that the walk-through is proven by a test; a real module would
live in app/modules/shipping with the same five files.
"""
