"""Seams: a classic microservice architecture (an API gateway in front of users, orders,
payments and notifications, each with its own database, events on a bus between them) as
one Litestar process."""
