"""Money at risk: exact amounts in integer minor units per currency (never floats),
their wording, and the rule that calls a rise sudden. Pure: no database, no clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

# ISO 4217 minor-unit exponents that are not 2 (Stripe's zero- and three-decimal lists).
ZERO_DECIMAL = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])


def exponent(currency: str) -> int:
    code = currency.upper()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def major(amount: int, currency: str) -> Decimal:
    """Minor units as an exact Decimal in the currency's major unit (1234 USD -> 12.34)."""
    return Decimal(int(amount)).scaleb(-exponent(currency))


def format_money(amount: int, currency: str) -> str:
    """`12,345.67 USD`: exact, grouped, with the currency's own number of decimals."""
    places = exponent(currency)
    value = major(amount, currency)
    return f"{value:,.{places}f} {currency.upper()}"


def format_totals(totals: Mapping[str, int]) -> str:
    """Several currencies, never added together: `1,200.00 EUR + 35.50 USD`."""
    parts = [format_money(v, c) for c, v in sorted(totals.items()) if v]
    return " + ".join(parts) or "nothing"


@dataclass(frozen=True)
class Rise:
    metric: str  # "plays" or a currency code
    before: int
    now: int
    since: datetime

    def describe(self) -> str:
        if self.metric == "plays":
            return f"plays pending rose from {self.before} to {self.now}"
        return (
            f"{self.metric} at risk rose from {format_money(self.before, self.metric)} "
            f"to {format_money(self.now, self.metric)}"
        )


def sudden_rise(
    series: Sequence[tuple[datetime, Mapping[str, int]]],
    *,
    window: timedelta,
    factor: Decimal,
    min_plays: int = 1,
) -> Rise | None:
    """Whether the latest point rose `factor` times or more against the lowest point
    of the `window` before it, for the pending plays or any currency's amount.

    `series`: (taken at, {"plays": n, "USD": minor units, ...}) oldest first. A rise
    from zero counts once the latest value reaches `min_plays` plays (or any amount
    in a currency whose plays count rose that far)."""
    if len(series) < 2:
        return None
    latest_at, latest = series[-1]
    earlier = [(at, v) for at, v in series[:-1] if latest_at - at <= window]
    if not earlier:
        return None
    if latest.get("plays", 0) < min_plays:
        return None
    for metric in ["plays", *sorted(k for k in latest if k != "plays")]:
        now_value = int(latest.get(metric, 0))
        at, low = min(earlier, key=lambda p: int(p[1].get(metric, 0)))
        before = int(low.get(metric, 0))
        if now_value > before and now_value >= factor * before:
            return Rise(metric, before, now_value, at)
    return None
