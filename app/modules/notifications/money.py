"""Amounts in minor units, written the way a person reads them: "12.50 EUR", "1250 JPY"."""

from __future__ import annotations

from decimal import Decimal

# ISO 4217 minor-unit exponents that are not 2 (pycountry carries no exponents).
MINOR_UNIT_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"), 0),
    **dict.fromkeys(("RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}


def format_amount(amount: int, currency: str) -> str:
    """An amount in minor units with its currency, exactly (no float rounding)."""
    code = currency.upper()
    exponent = MINOR_UNIT_EXPONENTS.get(code, 2)
    major = Decimal(amount).scaleb(-exponent)
    return f"{major:.{exponent}f} {code}"
