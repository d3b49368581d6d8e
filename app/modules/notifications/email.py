"""The email channel: a sink that records what would be sent.

The stored notification row is the record; the channel only says, in the log, that it went.
A real mail transport would replace `send` and nothing else.
"""

from __future__ import annotations

import logging

from app.modules.notifications.store import NotificationRow

log = logging.getLogger("app.modules.notifications")


class EmailChannel:
    name = "email"

    def send(self, notification: NotificationRow) -> None:
        log.info("email to %s: %s", notification.to, notification.subject)
