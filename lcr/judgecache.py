"""The judge's verdict cache: RUN_DIR/judge-cache.jsonl, keyed by everything that shapes a reply.

    cache = VerdictCache(rd.judge_cache)
    hit = cache.get(VerdictCache.key(unit, official, ident, asked, mode, max_new_tokens))

The key covers the unit's key, its answer and official answer, the judge's model, prompt, prompt
role and backend, its endpoint (judge.base_url, or the vllm judge's weight revision), the
temperature, max_new_tokens and the structured mode (lcr.judge decides which modes a lookup
tries). Only verdicts go in: judge errors are never cached. Entries written before this key
(CACHE_VERSION "v2") never match, so those answers are asked once more. The file is only a
cache: no verdict file depends on it, and moving it aside makes the judge ask again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lcr.io import append_locked, read_jsonl, sha256_text
from lcr.units import response_sha

CACHE_VERSION = "v2"  # keys of v1 entries (before endpoint, sampling and mode) never match


class VerdictCache:
    """Append-only judge-cache.jsonl shared by every shard and output folder (flock'd appends)."""

    def __init__(self, path: Path):
        self.path = path
        self.entries = {r["cache_key"]: r for r in read_jsonl(path).records if "cache_key" in r}

    @staticmethod
    def key(unit: dict, official: str, ident: dict, asked: dict, mode: str,
            max_new_tokens: int | None = None) -> str:
        """Everything that shapes the judge's reply to this answer (module docstring)."""
        parts = [CACHE_VERSION, unit["key"], response_sha(unit), sha256_text(official),
                 ident["judge_model"], ident["judge_prompt"], ident["judge_backend"],
                 ident["judge_prompt_role"], asked["judge_endpoint"], asked["judge_temperature"],
                 max_new_tokens or asked["judge_max_new_tokens"], mode]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def get(self, cache_key: str) -> dict | None:
        return self.entries.get(cache_key)

    def add(self, entries: list[dict]) -> None:
        append_locked(self.path, entries)
        self.entries.update((e["cache_key"], e) for e in entries)
