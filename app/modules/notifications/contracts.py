"""The events the notifications module publishes: its public face.

It publishes none yet. The file stays so that every module has the same shape, and so that
the first event it ever publishes has an obvious home.
"""

from __future__ import annotations
