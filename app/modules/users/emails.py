"""The one comparison key of an email address: what the users table's unique key, the account
lookup at login and the failed-login limits all use, so no spelling of an address can reach an
account without sharing its limits."""

from __future__ import annotations

import unicodedata

EMAIL_KEY_LENGTH = 254  # the users table's email_key column

# Default-ignorable characters that are not of category Cf (format): they render as nothing.
_INVISIBLE_NON_FORMAT = frozenset(
    {"\u034f", "\u115f", "\u1160", "\u17b4", "\u17b5", "\u3164", "\uffa0"}
    | {chr(code) for code in range(0xFE00, 0xFE10)}  # variation selectors
    | {chr(code) for code in range(0xE0100, 0xE01F0)}  # variation selectors supplement
)


def _visible(text: str) -> str:
    return "".join(
        ch for ch in text if ch not in _INVISIBLE_NON_FORMAT and unicodedata.category(ch) != "Cf"
    )


def email_key(email: str) -> str:
    """Equal for every spelling a person would read as the same address: compatibility forms
    (fullwidth letters, NBSP, ideographic space) folded by NFKC, invisible characters (zero-width
    spaces and joiners, soft hyphens, BOM) dropped anywhere, whitespace trimmed at both ends,
    case folded. ASCII addresses get the key they always had (`email.strip().casefold()`)."""
    folded = _visible(unicodedata.normalize("NFKC", email)).strip().casefold()
    key = unicodedata.normalize("NFKC", folded)  # casefolding can leave a non-NFKC string
    # Folding can lengthen ("\u00df" is "ss"): cut to what the column holds. Two addresses
    # alike in their first 254 folded characters then share one key, so one account.
    return key[:EMAIL_KEY_LENGTH]


def legacy_email_key(email: str) -> str:
    """The key rows were stored under before `email_key` folded Unicode: still looked up, so an
    account registered with a non-ASCII address keeps logging in as before."""
    return email.strip().casefold()
