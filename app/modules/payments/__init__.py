"""Payments: charges and refunds through the simulated card processor. Owns the payments database."""
