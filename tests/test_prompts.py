"""The official AA-LCR prompt texts, byte-exact."""

import re
from pathlib import Path

import pytest

from lcr.prompts import (
    REVISIONS,
    SYSTEM_ROLE_USER_TURN,
    RevisionError,
    candidate_prompt,
    judge_messages,
    protocol_for_revision,
    protocol_text,
)

GOLDEN = Path(__file__).parent / "golden"
PROTOCOL = Path(__file__).resolve().parents[2] / "shared" / "aa-lcr-protocol.md"


def test_candidate_prompt_golden():
    text = candidate_prompt(["first", "second"], "Which one?")
    assert text == (GOLDEN / "candidate-two-documents.txt").read_text(encoding="utf-8")
    assert text.endswith("END QUESTION\n") and not text.endswith("\n\n")


def test_braces_and_slot_names_in_documents_are_kept():
    text = candidate_prompt(["a {question} {x}"], "Q?")
    assert "a {question} {x}" in text


@pytest.mark.skipif(not PROTOCOL.exists(), reason="shared/aa-lcr-protocol.md not beside repo")
def test_packaged_texts_match_the_protocol_page():
    blocks = re.findall(r"```\n(.*?)```", PROTOCOL.read_text(encoding="utf-8"), re.S)
    assert protocol_text("candidate") == blocks[0]
    assert protocol_text("judge-v1.0") == blocks[2].rstrip("\n")
    assert protocol_text("judge-v1.1-system") == blocks[3]
    assert protocol_text("judge-v1.1-user") == blocks[4][:-1]


def test_judge_v10_has_no_system_prompt():
    msgs = judge_messages("v1.0", "Q?", "42", "It is 42.")
    assert [m["role"] for m in msgs] == ["user"]
    assert "The OFFICIAL ANSWER: 42\nCANDIDATE ANSWER TO ASSESS: It is 42." in msgs[0]["content"]
    assert msgs[0]["content"].endswith("Reply only with CORRECT or INCORRECT.")


def test_judge_v11_system_and_slots():
    msgs = judge_messages("v1.1", "Q?", "42", "{question} 42")
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert "START QUESTION Q?\n\nEND QUESTION" in user
    assert "BEGIN CANDIDATE ANSWER TO ASSESS\n\n{question} 42\n\nEND CANDIDATE" in user
    assert user.endswith("Reply as JSON, with a verdict of CORRECT or INCORRECT.")
    with pytest.raises(ValueError):
        judge_messages("v3", "Q", "A", "C")


def test_protocol_for_revision_knows_v10_and_v11_and_refuses_the_rest():
    v10 = "bdae010bbce259820c0e34c1d7cce210d966fb75"
    v11 = "9a77ef56b717057ade24ceab4d273712a0b4f19e"
    assert protocol_for_revision(v10) == "v1.0" and protocol_for_revision(v11) == "v1.1"
    for unknown in ("main", "sample-v2", v11[:12], ""):
        with pytest.raises(RevisionError) as e:
            protocol_for_revision(unknown)
        msg = str(e.value)
        assert f"data.revision = {unknown!r} is not a known AA-LCR revision" in msg
        assert f"v1.0 = {v10}" in msg and f"v1.1 = {v11}" in msg
        assert 'data.protocol = "v1.0" or "v1.1"' in msg
    # a private mirror declares its protocol; a known revision must agree with a declaration
    assert protocol_for_revision("mirror-2025-06", "v1.1") == "v1.1"
    assert protocol_for_revision(v10, "v1.0") == "v1.0"
    with pytest.raises(RevisionError, match=r"contradicts data.revision = '9a77.*AA-LCR v1.1"):
        protocol_for_revision(v11, "v1.0")
    with pytest.raises(RevisionError, match=r"data.protocol = 'v2'; expected one of v1.0, v1.1"):
        protocol_for_revision("mirror", "v2")


@pytest.mark.skipif(not PROTOCOL.exists(), reason="shared/aa-lcr-protocol.md not beside repo")
def test_known_revisions_match_the_protocol_page():
    page = PROTOCOL.read_text(encoding="utf-8")
    for protocol in ("v1.0", "v1.1"):
        (revision,) = re.findall(rf"{re.escape(protocol)} revision `([0-9a-f]{{40}})`", page)
        assert REVISIONS[revision] == protocol
    assert len(REVISIONS) == 2


@pytest.mark.parametrize("protocol", ["v1.0", "v1.1"])
def test_judge_text_in_the_system_message(protocol):
    official = judge_messages(protocol, "Q?", "42", "It is 42.")
    moved = judge_messages(protocol, "Q?", "42", "It is 42.", role="system")
    assert [m["role"] for m in moved] == ["system", "user"]
    assert moved[1]["content"] == SYSTEM_ROLE_USER_TURN
    # the same judge text, byte for byte, in one system message (v1.1's own system text first)
    assert moved[0]["content"] == "\n".join(m["content"] for m in official)
    if protocol == "v1.0":
        assert moved[0]["content"] == official[0]["content"] == protocol_text(
            "judge-v1.0").replace("{question}", "Q?").replace("{official_answer}", "42").replace(
            "{candidate_answer}", "It is 42.")
    with pytest.raises(ValueError, match="judge.prompt_role = 'assistant'"):
        judge_messages(protocol, "Q?", "42", "It is 42.", role="assistant")
