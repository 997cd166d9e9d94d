"""A held-out table of judge replies for lcr.verdict.parse_verdict (issue 19).

Each reply was written, with the verdict a careful human reader gives it, BEFORE the parser it
is checked against was written or run; the table is not tuned afterwards. It is kept apart from
the table test (tests/test_judge.py), which the parser is developed against. The replies are in
the style of Qwen3 and Llama judges: verdicts after a discussion, negations with asides, rubric
forms, verdict words used as adjectives of something else, replies cut at the judge's token
limit (finish_reason "length"), JSON with extra or contradicting keys, and verdicts in Chinese,
Spanish, German and French.

The bar (issue 19): no reply the reader does not read as CORRECT is parsed CORRECT, and at
least 34 of the 40 agree. The first run's figure is in jobs/JUDGE.md (40 of 40, no false
CORRECT, with the caveat that one author wrote both); disagreements would be listed there,
not fixed here.
"""

from lcr.verdict import parse_verdict

C, I, X = "CORRECT", "INCORRECT", "INVALID"
CUT = "length"  # the judge stopped at its token limit

# (reply, finish_reason, what a careful reader reads)
HELD_OUT = [
    # a negation far before the verdict word, or interrupted by an aside
    ("Let me compare. The official answer lists three firms; the candidate lists two. Not one "
     "element of the ranking the candidate gives is in the CORRECT place either.\n\nINCORRECT",
     "stop", I),
    ("The candidate does not, as far as I can tell from the documents, arrive at a CORRECT "
     "total.", "stop", I),
    ("I would not say the candidate is CORRECT.", "stop", I),
    ("No, the candidate answer is not correct.", "stop", I),
    # rubric forms
    ("Correct: No\nReason: the candidate gives 2019 while the official answer is 2021.", "stop",
     I),
    ("Correct: Yes - both name Rotterdam as the largest port.", "stop", C),
    # a verdict word as an adjective of something else claims nothing
    ("Instead of the CORRECT figure of 14 infringements, the candidate reports 12.", "stop", X),
    ("Correct answer: 14. Candidate answer: 12.", "stop", X),
    ('{"verdict": "CORRECT", "reason": "matches"}\n\nNote: the candidate also mentions an '
     "INCORRECT figure of 15 in passing, but commits to 14.", "stop", C),
    # cut at the token limit
    ("Step 1: Identify the official answer: 4.2 million.\nStep 2: The candidate's first figure, "
     "4.2 million, is CORRECT.\nStep 3: The candidate then also says the figure rose to 5.1 "
     "million in 2023, which", CUT, X),
    ("INCORRECT\n\nThe candidate gives 12 while the official answer is 14. Looking at the "
     "second part of the question, the candidate also", CUT, I),
    ("<think>The official answer is 14. The candidate says 14. So it's CORRECT. But wait, the "
     "question asked for the 2022 figure, and the candidate used 2021's. Let me check the "
     "documents again. The documents say 2022", CUT, X),
    # JSON: extra keys, contradicting keys, a qualifier in the value
    ('{"verdict": "CORRECT", "is_correct": false}', "stop", X),
    ('{"verdict": "CORRECT (rounding to one decimal accepted)"}', "stop", C),
    ('{"verdict": "INCORRECT", "confidence": "high", "notes": "The CORRECT value is 14."}',
     "stop", I),
    ("The candidate hedges between 12 and 14 without committing, so according to the guidelines "
     'it cannot be marked CORRECT.\n\n```json\n{"verdict": "INCORRECT"}\n```', "stop", I),
    # the final committed verdict after a discussion
    ("The candidate says revenue fell, which at first looks INCORRECT, because the official "
     "answer says it rose. Re-reading, the candidate refers to net income, and the question "
     "asks about net income, which did fall.\n\nThe final verdict: CORRECT", "stop", C),
    ("Verdict: CORRECT\n\nWait - the official answer is in thousands and the candidate gives "
     "millions. The values differ by a factor of 1000.\n\nVerdict: INCORRECT", "stop", I),
    ("INCORRECT\n\nHmm, actually I misread: the candidate does say 14. So the answer is CORRECT "
     "after all.", "stop", C),
    ("CORRECT? Not quite. The candidate rounds 67.46% to 67%, but the question asks for one "
     "decimal place. INCORRECT", "stop", I),
    ("Is the candidate's answer consistent with the official answer? Partly: the first two "
     "entries match, but the third does not. Hence the answer is not CORRECT.", "stop", I),
    ("The CORRECT answer, according to the documents, is 14; the candidate says 14 as well. "
     "So: correct.", "stop", C),
    ("- Official answer: 3.5%\n- Candidate answer: 3.5 percent\n- Same value, different "
     "notation.\n\n**Final Verdict:** **CORRECT**", "stop", C),
    ("Judgement: the candidate is right on the date but wrong on the amount, therefore "
     "INCORRECT.", "stop", I),
    # markdown and case
    ("**Verdict: CORRECT**", "stop", C),
    ("Answer: correct.", "stop", C),
    ("the candidate answer is incorrect.", "stop", I),
    ("Grade: INCORRECT\nThe candidate mixes up the two firms.", "stop", I),
    ("The candidate's answer (Berlin, Paris, Rome) matches the official ranking exactly.\n\n"
     "CORRECT", "stop", C),
    # split, hypothetical and undecided replies
    ("The candidate answer is CORRECT in its first part but INCORRECT in its second.", "stop",
     X),
    ("The candidate's ordering would have been CORRECT had it listed Apple first.", "stop", X),
    ("The answer is neither fully CORRECT nor entirely wrong.", "stop", X),
    ("CORRECT\nINCORRECT", "stop", X),
    # other languages
    ("判定：正确", "stop", C),
    ("候选答案与官方答案不一致。结论：不正确", "stop", I),
    ("Veredicto: INCORRECTO. La respuesta candidata da 12 en lugar de 14.", "stop", I),
    ("La respuesta es correcta.", "stop", C),
    ("Urteil: KORREKT", "stop", C),
    ("Die Antwort ist nicht korrekt, da sie 2019 statt 2021 nennt.", "stop", I),
    ("Verdict : INCORRECTE - la réponse donne 12 au lieu de 14.", "stop", I),
]


def agreement() -> tuple[int, list[tuple[str, str, str]]]:
    """(how many replies the parser reads as the reader does, the disagreements)."""
    wrong = []
    for text, finish, want in HELD_OUT:
        got = parse_verdict(text, finish_reason=finish)
        if got != want:
            wrong.append((text, want, got))
    return len(HELD_OUT) - len(wrong), wrong


def test_held_out_has_40_replies_of_every_kind():
    assert len(HELD_OUT) == 40
    assert {want for _, _, want in HELD_OUT} == {C, I, X}


def test_held_out_never_reads_correct_where_the_reader_does_not():
    false_correct = [(t, w) for t, f, w in HELD_OUT
                     if w != C and parse_verdict(t, finish_reason=f) == C]
    assert false_correct == []


def test_held_out_agreement_is_at_least_34_of_40():
    agreed, wrong = agreement()
    assert agreed >= 34, wrong
