"""Reading a judge's reply: CORRECT, INCORRECT or INVALID, never a guess.

    >>> parse_verdict("The figures match.\\n\\n**Final verdict:** CORRECT")
    'CORRECT'
    >>> read_verdict("Step 1: the year is CORRECT. Step 2: the", finish_reason="length")
    ('INVALID', 'truncated')
    >>> read_structured('{"verdict": "INCORRECT"}', "json_schema")
    ('INCORRECT', None)

A judge that decodes under structured outputs (lcr.backends asks for a choice or a JSON schema
where it can) is read strictly by `read_structured`. Prose, from judges that cannot, is read by
`read_verdict`:

1. Reasoning blocks (<think>...</think>), struck-out text, quotes of other text (a quote of the
   candidate such as "Correct: 12 infringements") and the choice phrase "CORRECT or INCORRECT"
   are no claims.
2. Claims are found, each at its place in the reply.
   - Decisive: a JSON verdict (extra keys allowed, a qualifier after the word kept, keys that
     contradict each other ambiguous); a labelled verdict ("Verdict: X", "Answer: correct.",
     "结论：不正确", "Urteil: KORREKT"); a rubric ("Correct: No", "CORRECT? No"); and a bare
     verdict, a line or sentence or the piece after ":", a dash or "so" that is nothing but the
     verdict ("Incorrect. The candidate ...", "It says 12, so INCORRECT.").
   - Prose: a verdict word in a sentence ("the candidate answer is incorrect."), read in its
     clause, asides included. A negation anywhere before it turns CORRECT into INCORRECT ("does
     not, in my view, give a CORRECT answer") and voids an INCORRECT; a hedge ("partially",
     "in its first part") makes it ambiguous; a question or a hypothetical ("would be CORRECT
     if") claims nothing; a word that qualifies something else ("the CORRECT figure is 14"),
     a claim about a part ("the year is correct") or about the official answer is no verdict.
3. The final committed verdict counts: the last decisive claim, unless the one right before it
   says otherwise with no words between them ("CORRECT\\nINCORRECT" is INVALID). Prose after it
   must agree, unless a retraction ("wait", "actually", "on reflection") comes first: then the
   retraction counts. Without a decisive claim every prose claim must agree.
4. A reply the judge ended at its token limit (finish_reason "length") is INVALID, reason
   "truncated", unless its verdict came first.

Verdict words count in any case, in English, Chinese, Spanish, German and French.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

C, I, A = "CORRECT", "INCORRECT", "AMBIGUOUS"
STRUCTURED_MODES = {"v1.0": "choice", "v1.1": "json_schema"}  # per judge prompt
CHOICES = (C, I)
VERDICT_SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string",
                                                               "enum": list(CHOICES)}},
                  "required": ["verdict"], "additionalProperties": False}

# ----------------------------------------------------------------------------- the words

_THINK = re.compile(r"<(think|thinking|reasoning)>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(?:think|thinking|reasoning)\s*>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(?:think|thinking|reasoning)>", re.IGNORECASE)
_WORD_I = (r"不正确|不准确|错误|\b(?:incorrect(?:[oa]s?|es?)?|inkorrekt(?:e[nrs]?)?|"
           r"unrichtig(?:e[nrs]?)?|falsch(?:e[nrs]?)?|faux|fausses?|wrong)\b")
_WORD_C = r"正确|准确|\b(?:correct(?:[oa]s?|es?)?|korrekt(?:e[nrs]?)?|richtig(?:e[nrs]?)?)\b"
_WORD = re.compile(rf"(?P<i>{_WORD_I})|(?P<c>{_WORD_C})", re.IGNORECASE)
_NOT = r"(?:not|nicht|pas|no\s+es|no\s+está|n'est\s+pas)"
_MARKDOWN = re.compile(r"[*_`#~|]")
_STRUCK = re.compile(r"~~.*?~~|<(s|del|strike)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_QUOTED = re.compile(r"\"[^\"\n]*\"|“[^”\n]*”|(?<!\w)'[^'\n]*'(?!\w)")
_CHOICE = re.compile(rf"(?:{_WORD_C}|{_WORD_I})\s*(?:,?\s*or|/|and|vs\.?|versus|o|oder|ou)\s*"
                     rf"(?:{_WORD_C}|{_WORD_I})", re.IGNORECASE)
_LABELS = (r"(?:final\s+|overall\s+|my\s+)?(?:verdict|judge?ment|assessment|grade|grading|"
           r"evaluation|decision|conclusion|rating|veredicto|evaluación|juicio|conclusión|"
           r"calificación|urteil|bewertung|beurteilung|entscheidung|fazit|jugement|évaluation|"
           r"décision|最终判定|判定|结论|评判|判断|裁决|评估|评价|答案|回答)")
_LABEL = re.compile(
    rf"(?:{_LABELS})[\"'”]?\s*(?:final(?:e)?\s*)?(?:(?:is|es|ist|est)\s+)?[:=：\-–—]?\s*[\"'“(\[]*\s*"
    rf"(?P<neg>{_NOT}\s+)?(?P<word>{_WORD_C}|{_WORD_I})", re.IGNORECASE)
_LINE_LABEL = re.compile(  # "Answer: correct." only at a line's start: "answer" is common
    rf"^\s*(?:final\s+)?(?:answer|result|resultado|respuesta|ergebnis|antwort|réponse|"
    rf"résultat)\s*[:：]\s*[\"'“(\[]*\s*(?P<neg>{_NOT}\s+)?(?P<word>{_WORD_C}|{_WORD_I})",
    re.IGNORECASE | re.MULTILINE)
_RUBRIC = re.compile(rf"(?P<word>{_WORD_C}|{_WORD_I})\s*[?:=：？]\s*[\"'“(\[]*\s*"
                     r"(?P<ans>yes|no|true|false|sí|si|ja|nein|oui|non|是|否)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[!?;]|\.(?!\d)|(?<!\d)\.|\n|[。！？；]")  # not 4.2
_PIECE = re.compile(r"[:：]|\s[-–—]+\s|[()\[\]{}]|,")  # delimiters of a bare verdict's piece
_CONCLUSIVE = re.compile(
    r"^(?:\s|,|so|thus|therefore|hence|then|overall|accordingly|consequently|ergo|finally|"
    r"in\s+(?:conclusion|summary|short|sum)|to\s+(?:conclude|sum\s+up)|all\s+in\s+all|"
    r"verdict|final|also|por\s+tanto|por\s+lo\s+tanto|daher|somit|donc|ainsi|因此|所以)*$",
    re.IGNORECASE)
_CLAUSE_CUT = re.compile(
    r",\s*(?:and|und|et|y)\b|\b(?:so|thus|therefore|hence|because|since|but|however|although|"
    r"though|whereas|yet|while|pero|sino|aber|jedoch|mais|cependant)\b|^\s*(?:no|yes|nope)\b"
    r"\s*[,:-]", re.IGNORECASE)
_NEGATION = re.compile(
    r"\b(?:not|never|no|nothing|none|nobody|neither|nor|cannot|without|hardly|scarcely|barely|"
    r"far\s+from|fails?\s+to|failed\s+to|lacks?|nicht|keine?[nrms]?|nie|niemals|pas|jamais|"
    r"nunca|tampoco|ni)\b|n[’']t\b", re.IGNORECASE)
_NOT_NEGATION = re.compile(r"\b(?:no|without)\s+(?:doubt|question)\b|\bnot\s+only\b|"
                           r"\bno\s+matter\b|\bnothing\s+but\b", re.IGNORECASE)
_MODAL = re.compile(r"\b(?:would|could|might|may|should|wäre|würde|sería|serait)\b",
                    re.IGNORECASE)
_CONDITION = re.compile(r"\b(?:if|unless|whether|provided|had\s+it|were\s+it|wenn|falls|si)\b",
                        re.IGNORECASE)
_HEDGE_BEFORE = re.compile(
    r"\b(?:partially|partly|mostly|largely|almost|nearly|somewhat|half|semi|arguably|"
    r"essentially|basically|fully|entirely|completely|totally|wholly|quite|exactly|"
    r"teilweise|parcialmente|partiellement)[\s-]*$", re.IGNORECASE)
_DOUBT = re.compile(r"\b(?:probably|likely|possibly|perhaps|maybe|presumably|seems?|appears?|"
                    r"looks?|unsure|not\s+sure|uncertain|unclear|vielleicht|quizás|peut-être)\b",
                    re.IGNORECASE)
_UNDECIDED = re.compile(r"\b(?:not\s+able|unable|impossible|cannot|can[’']t|could\s*n[’']t|"
                        r"hard|difficult)\s+(?:to\s+)?(?:determine|tell|decide|judge|say|assess|"
                        r"verify|confirm|know)\b", re.IGNORECASE)
_PROVISIONAL = re.compile(r"\b(?:at\s+first|initially|at\s+a\s+glance|on\s+the\s+surface|"
                          r"superficially|prima\s+facie)\b", re.IGNORECASE)
_HEDGE_AFTER = re.compile(r"^\s*(?:in\s+(?:part|parts|its|the\s+(?:first|second|main))|partly|"
                          r"partially|except|apart\s+from|but\s+for|for\s+the\s+most\s+part|"
                          r"with\s+(?:minor\s+)?(?:errors|exceptions|caveats))\b", re.IGNORECASE)
# A verdict word qualifies what follows it when a noun-like word comes next ("the CORRECT
# figure"); these words can follow a predicative one ("CORRECT as the figures match").
_FOLLOW = frozenset({
    "and", "or", "but", "so", "because", "since", "as", "for", "in", "on", "at", "to", "with",
    "by", "from", "of", "overall", "here", "now", "then", "too", "also", "either", "indeed",
    "after", "all", "according", "given", "though", "although", "however", "yet", "if",
    "unless", "per", "based", "regarding", "nonetheless", "anyway", "still", "enough", "again",
    "actually", "is", "was", "it", "this", "that", "which", "when", "where", "i", "we", "the",
    "a", "an", "its", "their", "there", "answer's"
})
_ABOUT_OTHERS = re.compile(r"\b(?:official|expected|reference|gold|ground\s+truth|key)\b",
                           re.IGNORECASE)
_PART = re.compile(r"\b(?:year|date|month|unit|units|step|part|rounding|format|sign|spelling|"
                   r"entry|item|element|component|criterion|criteria|latter|former|reasoning|"
                   r"explanation|method|calculation|approach|working|"
                   r"arithmetic|premise|assumption)s?\b", re.IGNORECASE)
_WHOLE = re.compile(r"\b(?:answer|candidate|response|submission|it|this|reply|result|ranking|"
                    r"ordering|list|respuesta|antwort|réponse)\b", re.IGNORECASE)
_RETRACTION = re.compile(
    r"\b(?:wait|actually|on\s+(?:second|further)\s+thought|on\s+reflection|re-?read\w*|"
    r"re-?check\w*|re-?examin\w*|correction|misread|my\s+mistake|scratch\s+that|after\s+all|"
    r"hmm+|reconsider\w*|let\s+me\s+check)\b", re.IGNORECASE)
_LABEL_WORDS = re.compile(rf"{_LABELS}|\b(?:final|answer|is|the|my)\b|[\W\d_]", re.IGNORECASE)
_JSON_KEYS = {"verdict", "final_verdict", "judgment", "judgement", "grade", "assessment",
              "evaluation", "decision", "label", "result", "conclusion", "veredicto", "urteil",
              "判定", "结论"}
_JSON_BOOL_KEYS = {"is_correct": True, "correct": True, "is_right": True,
                   "is_incorrect": False, "incorrect": False}


@dataclass
class Claim:
    start: int
    end: int
    verdict: str  # CORRECT, INCORRECT or AMBIGUOUS
    decisive: bool


def _word_verdict(word: str, negated: bool) -> str:
    base = I if re.fullmatch(_WORD_I, word, re.IGNORECASE) else C
    if not negated:
        return base
    return I if base == C else A  # "not incorrect" claims nothing clear


def strip_reasoning(text: str) -> str:
    """The text outside <think>...</think> blocks (an unclosed block runs to the end)."""
    text = _THINK.sub(lambda m: " " * len(m.group(0)), text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:  # the opening tag was in the chat template
        text = " " * closes[-1].end() + text[closes[-1].end():]
    opened = _THINK_OPEN.search(text)
    return text[:opened.start()] if opened else text


def _blank(text: str, start: int, end: int) -> str:
    """`text` with [start, end) replaced by spaces: positions of the rest stay put."""
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


# ----------------------------------------------------------------------------- JSON

def _json_value(value) -> str:
    """A JSON verdict value -> C / I / A: the word, "not" + word, or the word and a qualifier
    in brackets or after punctuation ("CORRECT (rounding accepted)")."""
    if not isinstance(value, str):
        return A
    text = _MARKDOWN.sub(" ", value).strip()
    m = re.match(rf"^(?P<neg>{_NOT}\s+)?(?P<word>{_WORD_C}|{_WORD_I})(?P<rest>.*)$", text,
                 re.IGNORECASE | re.DOTALL)
    if not m:
        return A
    rest = m.group("rest").strip()
    if rest and not re.match(r"^[(\[,;:.!\-–—]", rest):
        return A
    return _word_verdict(m.group("word"), bool(m.group("neg")))


def _json_bool(value, positive: bool) -> str:
    if isinstance(value, str):
        value = {"yes": True, "true": True, "no": False, "false": False}.get(
            value.strip().lower(), value)
    if not isinstance(value, bool):
        return A
    return C if value == positive else I


def _json_verdicts(obj) -> list[str]:
    """The verdicts an object's keys state (nested objects looked into)."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = k.strip().lower() if isinstance(k, str) else ""
            if isinstance(v, dict) or (isinstance(v, list) and key not in _JSON_KEYS):
                out += _json_verdicts(v)
            elif key in _JSON_KEYS:
                out.append(_json_value(v))
            elif key in _JSON_BOOL_KEYS:
                out.append(_json_bool(v, _JSON_BOOL_KEYS[key]))
    elif isinstance(obj, list):
        for v in obj:
            out += _json_verdicts(v)
    return out


def _json_claims(text: str) -> tuple[list[Claim], str]:
    """One decisive claim per JSON object with a verdict key (ambiguous where its keys
    disagree), and the text with those objects blanked."""
    decoder, claims = json.JSONDecoder(), []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except ValueError:
            pos = text.find("{", pos + 1)
            continue
        found = set(_json_verdicts(obj))
        if found:
            claims.append(Claim(pos, end, found.pop() if len(found) == 1 else A, True))
            text = _blank(text, pos, end)
        pos = text.find("{", end)
    return claims, text


# ----------------------------------------------------------------------------- text

def _unquoted(text: str) -> str:
    """`text` with struck-out text, choice phrases, and quotes (inline or `>` lines) that hold
    a verdict word among other words blanked: those quote someone else."""
    for pattern in (_STRUCK, _CHOICE):
        for m in list(pattern.finditer(text)):
            text = _blank(text, m.start(), m.end())

    def other_words(inner: str) -> bool:
        plain = _MARKDOWN.sub(" ", inner).strip().strip(".!\"' ")
        return bool(_WORD.search(plain)) and not re.fullmatch(
            rf"(?:{_NOT}\s+)?(?:{_WORD_C}|{_WORD_I})", plain, re.IGNORECASE)

    for m in list(_QUOTED.finditer(text)):
        if other_words(m.group(0)[1:-1]):
            text = _blank(text, m.start(), m.end())
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(">") and other_words(line.lstrip()[1:]) and not (
                _LABEL.search(_MARKDOWN.sub(" ", line))):
            text = _blank(text, offset, offset + len(line))
        offset += len(line)
    return text


def _labelled(plain: str) -> list[Claim]:
    claims = []
    for pattern in (_LABEL, _LINE_LABEL):
        for m in pattern.finditer(plain):
            after = plain[m.end("word"):]
            verdict = _word_verdict(m.group("word"), bool(m.group("neg")))
            if _HEDGE_AFTER.match(after):
                verdict = A
            claims.append(Claim(m.start("word"), m.end("word"), verdict, True))
    return claims


def _rubrics(plain: str) -> list[Claim]:
    out = []
    for m in _RUBRIC.finditer(plain):
        yes = m.group("ans").lower() in ("yes", "true", "sí", "si", "ja", "oui", "是")
        word = re.fullmatch(_WORD_C, m.group("word"), re.IGNORECASE)
        verdict = (C if yes else I) if word else (I if yes else A)
        out.append(Claim(m.start(), m.end(), verdict, True))
    return out


def _sentence(plain: str, start: int, end: int) -> tuple[int, int, str]:
    """(start, end, terminator) of the sentence holding [start, end)."""
    left = max((m.end() for m in _SENTENCE_END.finditer(plain, 0, start)), default=0)
    m = _SENTENCE_END.search(plain, end)
    return left, (m.start() if m else len(plain)), (m.group(0) if m else "")


def _bare(before: str, after: str) -> bool:
    """A verdict word that is the whole of its piece: nothing but conclusive words ("so",
    "overall") after the last delimiter before it, nothing before the next one after it."""
    cuts = list(_PIECE.finditer(before))
    lead = before[cuts[-1].end():] if cuts else before
    lead = re.sub(rf"\b{_NOT}\s*$", "", lead, flags=re.IGNORECASE).strip(" '\"“”‘’")
    if cuts and cuts[-1].group(0) == "," and not lead and not _CONCLUSIVE.match(
            before[:cuts[-1].start()].split(" ")[-1]):
        return False  # "It is not, in my view, CORRECT": a comma alone starts no verdict
    tail = _PIECE.split(after, maxsplit=1)[0]
    return bool(_CONCLUSIVE.match(lead)) and not tail.strip(" .!\"'“”")


def _prose(clause: str, after: str, question: bool) -> str | None:
    """What a verdict word in a sentence claims, from its clause before it and the text after
    it; None for no claim."""
    clause = _NOT_NEGATION.sub(" ", clause)
    nxt = re.match(r"\s*([\w'’]+)", after)
    attributive = bool(nxt) and not re.match(r"^\s*[,.;:!?)\]]", after) and (
        nxt.group(1).lower() not in _FOLLOW)
    negations = len(_NEGATION.findall(clause))  # "would not say" is negated, not hypothetical
    if _DOUBT.search(clause) or _UNDECIDED.search(clause) or _PROVISIONAL.search(
            clause + " " + after):
        return A  # "not sure whether it is CORRECT", "probably CORRECT", "CORRECT at first"
    if question or (not negations and (_MODAL.search(clause) or _CONDITION.search(
            clause + " " + after.split(".")[0]))):
        return None
    if _HEDGE_BEFORE.search(clause) or _HEDGE_AFTER.match(after):
        return A
    if attributive and not negations:
        return None  # "the CORRECT figure is 14": qualifies something else
    if _ABOUT_OTHERS.search(clause) or (_PART.search(clause) and not _WHOLE.search(clause)):
        return None  # about the official answer, or about a part of the candidate's
    if negations % 2 == 0:
        return A if negations else ""
    return "negated"


def _word_claims(plain: str, taken: list[tuple[int, int]]) -> list[Claim]:
    """Bare and prose claims of the verdict words no label, rubric or JSON claim holds."""
    claims = []
    for m in _WORD.finditer(plain):
        if any(a <= m.start() < b for a, b in taken):
            continue
        left, right, end = _sentence(plain, m.start(), m.end())
        before, after = plain[left:m.start()], plain[m.end():right]
        if re.match(r"^\s*[:：]\s*[\d$€£¥\"“']", plain[m.end():]):
            continue  # "Correct: 14": a label of a value, not a verdict
        if end not in ("?", "？") and _bare(before, after):
            neg = bool(re.search(rf"\b{_NOT}\s*$", before, re.IGNORECASE))
            claims.append(Claim(m.start(), m.end(), _word_verdict(m.group(0), neg), True))
            continue
        cut = list(_CLAUSE_CUT.finditer(before))
        clause = before[cut[-1].end():] if cut else before
        read = _prose(clause, after, end in ("?", "？"))
        if read is None:
            continue
        verdict = read if read == A else _word_verdict(m.group(0), read == "negated")
        if verdict == A and read != A:  # a negated INCORRECT: no claim
            continue
        claims.append(Claim(m.start(), m.end(), verdict, False))
    return claims


def _claims(text: str) -> tuple[list[Claim], str]:
    claims, rest = _json_claims(strip_reasoning(text))
    plain = _MARKDOWN.sub(" ", _unquoted(rest))
    claims += _rubrics(plain) + _labelled(plain)
    taken = [(c.start, c.end) for c in claims]
    claims += _word_claims(plain, taken)
    return sorted(claims, key=lambda c: c.start), plain


def _words_between(plain: str, start: int, end: int) -> bool:
    return bool(_LABEL_WORDS.sub(" ", plain[start:end]).strip())


# ----------------------------------------------------------------------------- the decision

def _decide(claims: list[Claim], plain: str) -> tuple[str, str | None]:
    if not claims:
        return "INVALID", "no verdict"
    decisive = [c for c in claims if c.decisive]
    if not decisive:
        return _agree(claims, plain)
    last = decisive[-1]
    for c in reversed(decisive[:-1]):  # claims right before it, with nothing between
        if _words_between(plain, c.end, last.start):
            break
        if c.verdict != last.verdict:
            return "INVALID", "contradicting verdicts"
    later = [c for c in claims if not c.decisive and c.start > last.end]
    if any(c.verdict != last.verdict for c in later):
        return _retracted(last, later, plain)
    if last.verdict == A:
        return "INVALID", "ambiguous verdict"
    return last.verdict, None


def _agree(claims: list[Claim], plain: str) -> tuple[str, str | None]:
    found = {c.verdict for c in claims}
    if len(found) == 1 and A not in found:
        return found.pop(), None
    return _retracted(claims[0], claims[1:], plain)


def _retracted(first: Claim, later: list[Claim], plain: str) -> tuple[str, str | None]:
    """After a retraction marker, the claims that follow it count, if they agree."""
    marker = _RETRACTION.search(plain, first.end)
    if marker:
        after = {c.verdict for c in later if c.start > marker.end()}
        if len(after) == 1 and A not in after:
            return after.pop(), None
    return "INVALID", "contradicting verdicts"


def read_verdict(text, finish_reason: str | None = None) -> tuple[str, str | None]:
    """A judge's prose reply -> (CORRECT | INCORRECT | INVALID, the reason when INVALID)."""
    if not isinstance(text, str) or not text.strip():
        return "INVALID", "empty reply"
    claims, plain = _claims(text)
    verdict, reason = _decide(claims, plain)
    if finish_reason == "length":  # cut at the judge's token limit: only a verdict it began
        first = claims[0] if claims else None  # with counts, if it was not reconsidering
        came_first = first and first.decisive and not _words_between(plain, 0, first.start)
        if not (came_first and verdict == first.verdict) or _RETRACTION.search(plain, first.end):
            return "INVALID", "truncated"
    return verdict, reason


def parse_verdict(text, finish_reason: str | None = None) -> str:
    """A judge's reply -> "CORRECT" | "INCORRECT" | "INVALID" (read_verdict without reason)."""
    return read_verdict(text, finish_reason)[0]


def structured_verdict(text, mode: str) -> str | None:
    """The verdict of a reply that is exactly what `mode` allows: one of CHOICES ("choice"),
    or the JSON object {"verdict": ...} ("json_schema"); None for any other reply."""
    raw = text.strip() if isinstance(text, str) else ""
    if mode == "choice":
        return raw if raw in CHOICES else None
    try:
        obj = json.loads(raw) if mode == "json_schema" else None
    except ValueError:
        return None
    ok = isinstance(obj, dict) and set(obj) == {"verdict"} and obj["verdict"] in CHOICES
    return obj["verdict"] if ok else None


def read_structured(text, mode: str, finish_reason: str | None = None
                    ) -> tuple[str, str | None]:
    """A reply decoded under structured outputs, read strictly (structured_verdict). One that
    does not conform (an endpoint that ignored the request) is read as prose, its reason
    saying so."""
    verdict = structured_verdict(text, mode)
    if verdict:
        return verdict, None
    verdict, reason = read_verdict(text, finish_reason)
    return verdict, f"not the {mode} asked for; read as prose" + (
        f": {reason}" if reason else "")
