"""The judge's verdict logic, pure functions of text: read a judge reply, or match criteria.

    >>> parse_verdict("<think>looks INCORRECT at first</think> **Verdict:** CORRECT")
    'CORRECT'
    >>> exact_verdict("67.5%; 1,234 units", "It rose 67.50% to 1234 units.")
    ('CORRECT', 'all 2 criteria found')

`parse_verdict` turns a judge model's reply into CORRECT / INCORRECT / INVALID (ambiguous
replies are INVALID, never guessed). `exact_verdict` is the offline `exact` judge backend: an
answer is CORRECT when every `;`-separated criterion of the official answer is found in it,
numbers compared by value at the criterion's written precision.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass

# ----------------------------------------------------------------------------- verdict parsing

_THINK = re.compile(r"<(think|thinking|reasoning)>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(?:think|thinking|reasoning)\s*>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(?:think|thinking|reasoning)>", re.IGNORECASE)
_MARKDOWN = re.compile(r"[*_`#>~]+")
_PHRASE = r"not\s+incorrect|not\s+correct|incorrect|correct"
_LABEL = re.compile(
    rf"\b(?:final\s+)?(?:verdict|judge?ment|assessment|grade)\b[\s:=\-\"'(\[]*"
    rf"(?:is\b[\s:\-\"'(\[]*)?({_PHRASE})\b",
    re.IGNORECASE,
)
_LEADING = re.compile(rf"^({_PHRASE})(?:\s*[.!:;,\-–—)]|$)", re.IGNORECASE)  # "Incorrect. The ..."
_UPPER = re.compile(r"\b(INCORRECT|CORRECT)\b")
_ANY_WORD = re.compile(r"\b(?:in)?correct\b", re.IGNORECASE)
_JSON_KEYS = ("verdict", "judgment", "judgement", "grade")
# Text that is not the judge's own claim: struck out, quoted (a quote of the candidate such
# as "Correct: 12 infringements"), or the choice itself ("CORRECT or INCORRECT").
_STRUCK = re.compile(r"~~.*?~~|<(s|del|strike)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_QUOTED = re.compile(r"\"[^\"\n]*\"|“[^”\n]*”|(?<!\w)'[^'\n]*'(?!\w)")
_CHOICE = re.compile(r"\b(?:in)?correct\s*(?:,?\s*or|/|and|vs\.?|versus)\s*(?:in)?correct\b",
                     re.IGNORECASE)
# Context of an upper-case verdict word in prose: its clause, cut at these boundaries.
_BOUNDARY = re.compile(
    r"[.!?;:,\n()\[\]{}\"“”]|\s[-–—]+\s|"
    r"\b(?:but|so|because|since|although|though|whereas|however|yet|therefore|hence|thus)\b",
    re.IGNORECASE)
_HEDGE = re.compile(
    r"\b(?:partially|partly|mostly|largely|almost|nearly|somewhat|half|semi|arguably|"
    r"not\s+(?:entirely|fully|completely|quite|totally|wholly|exactly))[\s-]*$", re.IGNORECASE)
_NEGATION = re.compile(
    r"(?:\b(?:not|never|no|nothing|none|cannot|hardly|scarcely|barely|neither|nor|without|"
    r"far\s+from|less\s+than|fail(?:s|ed)?\s+to)|n[’']t)(?:\s+[\w’']+){0,5}\s*$",
    re.IGNORECASE)
_MODAL = re.compile(r"\b(?:would|could|might|may|should)(?:\s+[\w’']+){0,3}\s*$", re.IGNORECASE)
_CONDITION = re.compile(r"\b(?:if|unless|whether|provided)\b", re.IGNORECASE)


def _word(phrase: str) -> str:
    """A verdict phrase -> CORRECT / INCORRECT, anything else (e.g. NOT INCORRECT) AMBIGUOUS."""
    norm = " ".join(_MARKDOWN.sub("", phrase).strip().strip(".!\"' ").upper().split())
    return {"CORRECT": "CORRECT", "INCORRECT": "INCORRECT", "NOT CORRECT": "INCORRECT"}.get(
        norm, "AMBIGUOUS")


def strip_reasoning(text: str) -> str:
    """The text outside <think>...</think> blocks (an unclosed block runs to the end)."""
    text = _THINK.sub("\n", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:  # the opening tag was in the chat template
        text = text[closes[-1].end():]
    opened = _THINK_OPEN.search(text)
    return text[:opened.start()] if opened else text


def _json_verdicts(obj) -> list[str]:
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and k.strip().lower() in _JSON_KEYS:
                out.append(_word(v) if isinstance(v, str) else "AMBIGUOUS")
            elif isinstance(v, (dict, list)):
                out += _json_verdicts(v)
    elif isinstance(obj, list):
        for v in obj:
            out += _json_verdicts(v)
    return out


def _json_claims(text: str) -> tuple[list[str], str]:
    """Verdicts of the JSON objects in `text` that have a verdict key, and the text without them."""
    decoder = json.JSONDecoder()
    claims, rest, last = [], [], 0
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except ValueError:
            pos = text.find("{", pos + 1)
            continue
        found = _json_verdicts(obj)
        if found:
            claims += found
            rest.append(text[last:pos])
            last = end
        pos = text.find("{", end)
    rest.append(text[last:])
    return claims, "\n".join(rest)


def _unquoted(text: str) -> str:
    """`text` without struck-out text, choice phrases, and quotes (inline or `>` lines) that
    hold a verdict word among other words: those quote someone else, not the judge's claim."""
    text = _CHOICE.sub(" ", _STRUCK.sub(" ", text))

    def span(m: re.Match) -> str:
        inner = m.group(0)[1:-1]
        keep = not _ANY_WORD.search(inner) or _word(inner) != "AMBIGUOUS"
        return m.group(0) if keep else '""'

    lines = []
    for line in _QUOTED.sub(span, text).splitlines():
        quoted = line.lstrip().startswith(">")
        inner = _MARKDOWN.sub("", line).strip()
        if quoted and _ANY_WORD.search(inner) and _word(inner) == "AMBIGUOUS" and not (
                _LABEL.match(inner)):
            continue
        lines.append(line)
    return "\n".join(lines)


def _line_claims(plain: str) -> list[str]:
    """Labelled verdicts ("Verdict: X") and lines that are, or start with, a verdict."""
    claims = [_word(m.group(1)) for m in _LABEL.finditer(plain)]
    for line in plain.splitlines():
        m = _LEADING.match(line.strip().strip("\"'()[]{}").strip())
        if m:
            claims.append(_word(m.group(1)))
    return claims


def _prose_claim(plain: str, m: re.Match) -> str | None:
    """What an upper-case CORRECT / INCORRECT in prose claims, read in its clause: None for a
    question or a hypothetical ("would be CORRECT if ..."), INCORRECT for a negated CORRECT
    ("is not CORRECT", "cannot be considered CORRECT", "Hardly CORRECT"), AMBIGUOUS for a
    hedged one ("partially CORRECT"); a negated INCORRECT claims nothing."""
    before = _BOUNDARY.split(plain[: m.start()])[-1]
    rest = plain[m.end():]
    after = _BOUNDARY.split(rest)[0]
    end = re.search(r"[.!?\n]", rest)
    if (end and end.group(0) == "?") or _MODAL.search(before) or _CONDITION.search(
            before + " " + after):
        return None
    word = m.group(1)
    if _HEDGE.search(before):
        return "AMBIGUOUS"
    if _NEGATION.search(before):
        return "INCORRECT" if word == "CORRECT" else None
    return word


def parse_verdict(text: str) -> str:
    """A judge's reply -> "CORRECT" | "INCORRECT" | "INVALID"; ambiguous replies are INVALID.

    Reasoning blocks, struck-out text, quotes of other text and the choice phrase "CORRECT or
    INCORRECT" are ignored. Claims are JSON verdicts, labelled verdicts, lines that are (or
    start with) a verdict word, and upper-case CORRECT / INCORRECT in prose, read with the
    negation, hedge, question or condition of their clause. All claims must agree, so a
    retraction ("CORRECT... wait, no: INCORRECT") is INVALID and a negative reply never
    becomes CORRECT; lower-case prose alone never counts ("is not entirely correct").
    """
    if not isinstance(text, str):
        return "INVALID"
    claims, rest = _json_claims(strip_reasoning(text))
    plain = _MARKDOWN.sub("", _unquoted(rest))
    claims += _line_claims(plain)
    claims += [c for m in _UPPER.finditer(plain) if (c := _prose_claim(plain, m))]
    found = set(claims)
    if len(found) == 1 and "AMBIGUOUS" not in found:
        return found.pop()
    return "INVALID"


# ----------------------------------------------------------------------------- exact matching

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
