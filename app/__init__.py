"""Seams: the seed's microservice architecture as one Litestar process."""
