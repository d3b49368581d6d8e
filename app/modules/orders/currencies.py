"""The currencies an order can be in: the ISO 4217 codes of money in circulation.

ISO 4217 (pycountry's list) also codes things nobody pays a shop with: precious metals,
bond-market units, the IMF's SDR, a code for testing, one for "no currency", and funds codes
(units of account kept beside a country's currency). An order in those is refused.
"""

from __future__ import annotations

import pycountry

NOT_MONEY_IN_CIRCULATION = frozenset(
    {
        *("XAG", "XAU", "XPD", "XPT"),  # gold, silver, palladium, platinum
        *("XBA", "XBB", "XBC", "XBD"),  # European bond-market units
        *("XAD", "XDR", "XSU", "XUA"),  # units of account: Arab dinar, SDR, Sucre, ADB unit
        *("XTS", "XXX"),  # reserved for testing; "no currency involved"
        *("BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI", "UYW"),  # funds codes
    }
)
CIRCULATING = tuple(
    sorted(
        currency.alpha_3
        for currency in pycountry.currencies
        if currency.alpha_3 not in NOT_MONEY_IN_CIRCULATION
    )
)
CIRCULATING_CODES = frozenset(CIRCULATING)
