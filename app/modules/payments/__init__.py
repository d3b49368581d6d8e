"""Payments: charges and refunds through the simulated card processor; owns its database."""
