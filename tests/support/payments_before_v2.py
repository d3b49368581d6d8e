"""`python -m tests.support.payments_before_v2 <the app's arguments>`: the app as it was
before payments accepted OrderPlaced v2, for the rolling-upgrade test
(tests/e2e/test_split_rolling_upgrade.py). Its view of OrderPlaced accepts v1 only, as the
code before the upgrade declared it; everything else is today's app. A v2 it receives is
parked, naming the version it needs (docs/decisions/0027-tolerant-readers.md)."""

from __future__ import annotations

import sys

from app.__main__ import main
from app.modules.payments.views import PlacedOrder

if __name__ == "__main__":
    PlacedOrder.accepts = (1,)  # before the upgrade
    sys.exit(main())
