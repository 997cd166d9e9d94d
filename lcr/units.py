"""Work units, their keys, and the hashes that say which units (and which prompts and answers)
a file or a done marker stands for.

    unit_key("q12", 0, 0)                    # "q12:0:0", the key of a unit everywhere
    keys_sha(plan["shards"][3]["units"])     # the identity a shard's .done marker records

A unit is one (question_id, seed, sample). Keys, not positions, identify records in shards,
the merge, verdicts and reports. A marker's hashes tie it to the units it covers, the prompts
they were made from and the answers (and official answers) they were judged on, so a marker
copied from elsewhere or left over from an older plan does not count.
"""

from __future__ import annotations

import hashlib

from lcr.io import sha256_text


def unit_key(question_id: str, seed: int, sample: int) -> str:
    return f"{question_id}:{seed}:{sample}"


def _sha_lines(lines) -> str:
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def keys_sha(units: list[dict]) -> str:
    """Identity of a set of units (a shard, a replica part): its sorted keys."""
    return _sha_lines(u["key"] for u in units)


def prompt_id(question: dict) -> str:
    """What a unit's generation depends on besides the config: its prompt's token ids (or, for
    a question too long to run, its length). A new snapshot or `lcr plan --force` that changes
    a question changes this, and that question's records and markers stop counting."""
    return question.get("prompt_sha256") or f"too_long:{question.get('prompt_tokens')}"


def prompts_sha(units: list[dict], prompt_ids: dict[str, str]) -> str:
    return _sha_lines(f"{u['key']}\t{prompt_ids.get(u['question_id'])}" for u in units)


def response_sha(unit: dict) -> str:
    return sha256_text(unit.get("response") or "")


def answers_sha(units: list[dict]) -> str:
    """Identity of a set of answers to judge: keys and the responses they hold."""
    return _sha_lines(f"{u['key']}\t{response_sha(u)}" for u in units)


def officials_sha(units: list[dict], answers: dict[str, str]) -> str:
    return _sha_lines(f"{u['key']}\t{sha256_text(answers.get(u['question_id'], ''))}"
                      for u in units)


def by_set(units: list[dict]) -> dict[str, list[dict]]:
    """Units grouped by document set, sets in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for u in units:
        groups.setdefault(u["document_set_id"], []).append(u)
    return groups


def plan_units(plan: dict) -> list[dict]:
    return [u for s in plan["shards"] for u in s["units"]]


def judge_shard_units(merged: list[dict], shard: int, shards: int) -> list[dict]:
    """Round-robin by position in merged.jsonl: unit i goes to judge shard i % shards."""
    return merged[shard::shards]
