"""Moved to app/split/proof.py; the old name stays until
the last import of it is rewritten."""

from app.split.proof import ALGORITHM, AUDIENCE, HEADER, GatewayProof, proof_key

__all__ = ["ALGORITHM", "AUDIENCE", "HEADER", "GatewayProof", "proof_key"]
