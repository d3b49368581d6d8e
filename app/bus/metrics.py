"""What the bus exports to Prometheus (GET /metrics): events published, handled, failed,
retried, dead-lettered and parked per type and consumer, handler latency, outbox backlog,
records purged after their retention, journeys the watch let go.

Metrics are process-wide (one registry), like the process they describe.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "seams_events",
    "Events a consumer finished with, by outcome: handled, failed, retried, dead_lettered, parked",
    ["type", "consumer", "outcome"],
)
PUBLISHED = Counter(
    "seams_events_published", "Events the outbox relay delivered", ["type", "producer"]
)
HANDLER_SECONDS = Histogram(
    "seams_handler_seconds",
    "Time a consumer's handler took for one event (one attempt)",
    ["type", "consumer"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
OUTBOX_BACKLOG = Gauge(
    "seams_outbox_backlog", "Events committed to an outbox and not yet delivered", ["producer"]
)
PURGED = Counter(
    "seams_purged",
    "Records deleted after their retention (docs/decisions/0035-retention.md), by store "
    "(a module, or bus) and kind: outbox, inbox, idempotency_keys, dead_letters, parked, "
    "attempts",
    ["store", "kind"],
)
WATCH_JOURNEYS_EVICTED = Counter(
    "seams_watch_journeys_evicted",
    "Journeys the watch let go, by reason: count (beyond APP_WATCH_JOURNEYS) or age (older "
    "than APP_WATCH_KEEP_SECONDS)",
    ["reason"],
)
