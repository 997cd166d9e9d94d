"""AA-LCR prompt texts, byte-exact, and the chat messages built from them.

    messages = candidate_messages(["first", "second"], "Which one?", system="none")
    messages = judge_messages("v1.1", question, official_answer, candidate_answer)
    messages = judge_messages("v1.0", q, a, c, role="system")   # the seed's critic setup

The texts live in lcr/protocol/*.txt, copied from the dataset card (see aa-lcr-protocol.md).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from lcr.errors import InputError

JUDGE_PROTOCOLS = ("v1.0", "v1.1")

# Which judge protocol goes with which dataset revision: v1.1 corrected 16 answer keys
# together with its new judge prompt, so mixing them misgrades those questions.
V10_REVISION = "bdae010bbce259820c0e34c1d7cce210d966fb75"
V11_REVISION = "9a77ef56b717057ade24ceab4d273712a0b4f19e"
REVISIONS = {V10_REVISION: "v1.0", V11_REVISION: "v1.1"}  # hub revision -> judge protocol

REASONING_SYSTEM_PROMPT = (
    "You answer questions about long documents. Work in steps before answering:\n"
    "1. Restate the question in your own words.\n"
    "2. List the sub-questions that must be answered to answer it.\n"
    "3. For each sub-question, quote or cite the evidence from the documents.\n"
    "4. Synthesise the evidence into an answer, doing any arithmetic explicitly.\n"
    "Finish with one line of the form `Final answer: ...` that commits to a single answer."
)


@cache
def protocol_text(name: str) -> str:
    """One of candidate, judge-v1.0, judge-v1.1-system, judge-v1.1-user."""
    return resources.files("lcr").joinpath(f"protocol/{name}.txt").read_text(encoding="utf-8")


def documents_text(documents: list[str]) -> str:
    return "\n\n".join(
        f"BEGIN DOCUMENT {i}:\n{text}\nEND DOCUMENT {i}" for i, text in enumerate(documents, 1)
    )


def candidate_prompt(documents: list[str], question: str, docs_text: str | None = None) -> str:
    """The official AA-LCR user message; `docs_text` replaces the joined documents (truncation)."""
    if docs_text is None:
        docs_text = documents_text(documents)
    # str.replace, not str.format: documents contain braces. The question goes in first so
    # that document text is never searched for slots.
    return (
        protocol_text("candidate")
        .replace("{question}", question)
        .replace("{documents_text}", docs_text, 1)
    )


def system_prompt(kind: str) -> str | None:
    if kind == "none":
        return None
    if kind == "reasoning":
        return REASONING_SYSTEM_PROMPT
    raise ValueError(f"model.system_prompt = {kind!r}; expected 'none' or 'reasoning'")


def candidate_messages(
    documents: list[str], question: str, system: str = "none", docs_text: str | None = None
) -> list[dict]:
    messages = []
    text = system_prompt(system)
    if text is not None:
        messages.append({"role": "system", "content": text})
    messages.append({"role": "user", "content": candidate_prompt(documents, question, docs_text)})
    return messages


# The user turn when the filled judge text goes in the system message (judge.prompt_role =
# "system", as the seed's evaluate.py did). Llama-3.1's chat format, like most, expects a
# user turn before the assistant answers, and some OpenAI-compatible servers refuse a
# conversation without one; this line asks for nothing the judge text does not already ask.
SYSTEM_ROLE_USER_TURN = "Assess the CANDIDATE ANSWER as instructed."
PROMPT_ROLES = ("user", "system")


def judge_messages(protocol: str, question: str, official: str, candidate: str,
                   role: str = "user") -> list[dict]:
    """Chat messages for the judge under AA-LCR protocol v1.0 or v1.1.

    role "user" is the protocol's own layout. role "system" puts the filled judge text in the
    system message (after v1.1's own system text) and SYSTEM_ROLE_USER_TURN in the user turn.
    """
    if role not in PROMPT_ROLES:
        raise ValueError(f"judge.prompt_role = {role!r}; expected one of {PROMPT_ROLES}")
    slots = {"{question}": question, "{official_answer}": official}
    if protocol == "v1.0":
        user = protocol_text("judge-v1.0")
        messages = []
    elif protocol == "v1.1":
        user = protocol_text("judge-v1.1-user")
        messages = [{"role": "system", "content": protocol_text("judge-v1.1-system")}]
    else:
        raise ValueError(f"judge.prompt = {protocol!r}; expected one of {JUDGE_PROTOCOLS}")
    for slot, value in slots.items():
        user = user.replace(slot, value)
    # The candidate answer goes in last so that text inside it is never treated as a slot.
    user = user.replace("{candidate_answer}", candidate)
    if role == "system":
        system = "\n".join([m["content"] for m in messages] + [user])
        return [{"role": "system", "content": system},
                {"role": "user", "content": SYSTEM_ROLE_USER_TURN}]
    messages.append({"role": "user", "content": user})
    return messages


JUDGE_PROMPT_FILES = {"v1.0": ("judge-v1.0",), "v1.1": ("judge-v1.1-system", "judge-v1.1-user")}
JUDGE_PROMPT_LAYOUT = {
    "v1.0": "one user message ending \"Reply only with CORRECT or INCORRECT.\"",
    "v1.1": "grading guidelines as the system message, a user message asking for a JSON "
            "verdict {\"verdict\": \"CORRECT\" | \"INCORRECT\"}",
}


def describe_judge_prompt(protocol: str, role: str = "user") -> str:
    """The judge prompt version spelled out, for reports: which AA-LCR revision it belongs to,
    its layout, where lcr put it, and the sha256 of its text as shipped in lcr/protocol."""
    import hashlib

    if protocol not in JUDGE_PROMPT_FILES:
        return f"judge prompt {protocol} (unknown to this lcr)"
    revision = next(r for r, p in REVISIONS.items() if p == protocol)
    text = "".join(protocol_text(name) for name in JUDGE_PROMPT_FILES[protocol])
    where = ("as the protocol lays it out" if role == "user" else
             "all of it in the system message (judge.prompt_role = \"system\")")
    return (f"AA-LCR judge prompt {protocol} (dataset revision {revision[:7]}; "
            f"{JUDGE_PROMPT_LAYOUT[protocol]}; {where}; text sha256 "
            f"{hashlib.sha256(text.encode()).hexdigest()[:12]})")


class RevisionError(InputError, ValueError):
    """A dataset revision whose judge protocol is unknown, or contradicts data.protocol."""


def known_revisions() -> str:
    return ", ".join(f"{protocol} = {revision}" for revision, protocol in REVISIONS.items())


def protocol_for_revision(revision: str, declared: str = "") -> str:
    """The judge protocol that matches a dataset revision.

    `declared` (data.protocol) states the protocol of a snapshot lcr cannot know by its
    revision, such as a private mirror; for a known revision it must agree. An unknown
    revision with nothing declared is refused: guessing would misgrade the 16 answer keys
    that v1.1 changed.
    """
    known = REVISIONS.get(revision)
    if declared:
        if declared not in JUDGE_PROTOCOLS:
            raise RevisionError(
                f"data.protocol = {declared!r}; expected one of {', '.join(JUDGE_PROTOCOLS)}")
        if known and known != declared:
            raise RevisionError(
                f"data.protocol = {declared!r} contradicts data.revision = {revision!r}, "
                f"which is AA-LCR {known}; drop data.protocol or pin the other revision")
        return declared
    if known is None:
        raise RevisionError(
            f"data.revision = {revision!r} is not a known AA-LCR revision (known: "
            f"{known_revisions()}); pin one of them, or declare the protocol of a private "
            "mirror with data.protocol = \"v1.0\" or \"v1.1\""
        )
    return known
