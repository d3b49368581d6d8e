"""The email channel: a sink that records what would be sent.

The stored notification row is the record; `render` builds the email a mail transport would
send, and `send` says, in the log, that it went (to which user, never the address). A real
transport would replace `send` with one that sends `render`'s message, and nothing else.

The medium is a plain-text email (text/plain; charset=utf-8), with no HTML part: text with
no markup cannot carry markup, so a name like `<script>` is shown as the characters it is.
What plain text must not let user text do is start a line of its own or, in a header, a
header of its own ("\\r\\nBcc: ..."): `one_line` turns every line break and control
character into a space, in the body's user text and in every header value.
"""

from __future__ import annotations

import logging
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTPUTF8

from app.modules.notifications.notification import Notification, one_line

log = logging.getLogger("app.modules.notifications")

FROM_ADDRESS = "Seams <no-reply@seams.invalid>"
# The address was checked when the user gave it; the stdlib's address parser fails on some
# that pass that check ("a@[.b"), so To is kept as the text it is, like Subject.
_HEADERS = HeaderRegistry()
# typeshed types the registry's classes as BaseHeader; the stdlib's own are mixins like this.
_HEADERS.map_to_type("to", UnstructuredHeader)  # type: ignore[arg-type]
_POLICY = SMTPUTF8.clone(header_factory=_HEADERS)


class EmailChannel:
    name = "email"

    def render(self, notification: Notification) -> EmailMessage:
        """The email this notification is: headers that cannot be split, a plain-text body."""
        message = EmailMessage(policy=_POLICY)
        message["From"] = FROM_ADDRESS
        message["To"] = one_line(notification.to)
        message["Subject"] = one_line(notification.subject)
        message.set_content(notification.body, subtype="plain", charset="utf-8")
        return message

    def send(self, notification: Notification) -> None:
        # A sink: it records and logs, so it does not build the MIME message a transport would
        # (the stdlib's email package costs ~0.5 ms a message: a third of a saga's CPU).
        # The user's id, never the address: a log outlives the user's deletion
        # (docs/decisions/0030-crypto-shredding.md).
        log.info(
            "email to user %s (notification %s): %s",
            notification.user_id,
            notification.id,
            one_line(notification.subject),
        )
