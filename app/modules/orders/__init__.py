"""Orders: places and tracks orders. Owns the orders document store."""
