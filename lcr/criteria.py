"""The exact judge backend's matching: an answer against the official answer's criteria.

    >>> exact_verdict("67.5%; 1,234 units", "It rose 67.50% to 1234 units.")
    ('CORRECT', 'all 2 criteria found')

An answer is CORRECT when every `;`-separated criterion of the official answer is found in it,
numbers compared by value at the criterion's written precision (lcr.backends' `exact`: offline,
no model). Pure functions of text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_NUMBER = re.compile(
    r"(?P<neg>(?<![^\s(\[])[-−])?(?P<cur>[$€£¥])?\s?(?<![\w.,])"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\d,]\d)"
    r"(?P<suf>\s*(?:%|percent\b|per\s*cent\b|percentage\s+points?\b|pp\b|thousand\b|"
    r"million\b|billion\b|trillion\b|mn\b|bn\b|tn\b)|(?:k|m|b)\b)?",
    re.IGNORECASE,
)
_SCALE = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mn": 1e6, "million": 1e6, "b": 1e9,
          "bn": 1e9, "billion": 1e9, "tn": 1e12, "trillion": 1e12}
_STOP = {"the", "and", "for", "with", "per", "cent", "percent", "percentage", "point", "points",
         "usd", "eur", "gbp", "dollar", "dollars", "approximately", "about", "around", "roughly"}


@dataclass
class Number:
    mantissa: float  # the number as written, sign included, scale word not applied
    scale: float  # 1, 1e3, 1e6, ...
    decimals: int  # digits after the decimal point as written
    percent: bool

    @property
    def value(self) -> float:
        return self.mantissa * self.scale


def numbers(text: str) -> list[Number]:
    """Numbers in text: thousands separators, currency symbols, %, scale words understood."""
    out = []
    for m in _NUMBER.finditer(unicodedata.normalize("NFKC", text)):
        raw = m.group("num").replace(",", "")
        suf = " ".join((m.group("suf") or "").lower().split())
        sign = -1.0 if m.group("neg") else 1.0
        out.append(Number(
            mantissa=sign * float(raw),
            scale=_SCALE.get(suf, 1.0),
            decimals=len(raw.split(".")[1]) if "." in raw else 0,
            percent=suf.startswith(("%", "percent", "per", "pp")),
        ))
    return out


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def number_matches(want: Number, got: Number) -> bool:
    """Same value (67.5% = 0.675), or `got` rounds to `want` at its written precision."""
    wants = {want.value} | ({want.value / 100} if want.percent else set())
    gots = {got.value} | ({got.value / 100} if got.percent else set())
    if any(_close(a, b) for a in wants for b in gots):
        return True
    if want.decimals or want.scale > 1:  # "1.2 million" vs 1,234,567; not "12" vs 12.4
        return _close(round(got.value / want.scale, want.decimals), want.mantissa)
    return False


_TOKEN = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|[^\W\d_]+")


def _norm(text: str) -> str:
    """Lower-case words and whole numbers ("12.4" stays one token, "1,234" becomes 1234)."""
    tokens = _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())
    return " ".join(t.replace(",", "") for t in tokens)


def criterion_found(criterion: str, response: str) -> bool:
    """The criterion's text in the response, or all its numbers and content words."""
    resp = _norm(response)
    if f" {_norm(criterion)} " in f" {resp} ":
        return True
    want = numbers(criterion)
    if not want:
        return False
    got = numbers(response)
    if not all(any(number_matches(w, g) for g in got) for w in want):
        return False
    words = {w for w in _norm(_NUMBER.sub(" ", criterion)).split()
             if len(w) > 2 and w.isalpha() and w not in _STOP}
    return words <= set(resp.split())


def exact_verdict(official: str, response: str) -> tuple[str, str]:
    """(verdict, explanation): CORRECT when every `;`-separated criterion is found."""
    criteria = [c.strip() for c in official.split(";") if c.strip()]
    if not criteria:
        return "INVALID", "the official answer has no criteria"
    missing = [c for c in criteria if not criterion_found(c, response)]
    if missing:
        return "INCORRECT", f"{len(missing)}/{len(criteria)} criteria not found: " + " | ".join(
            missing)
    return "CORRECT", f"all {len(criteria)} criteria found"
