"""`lcr bench --greedy N`: do the two attentions decode the same tokens?

    lcr bench JOB --engine-set shared_prefix_attention=false --engine-set "" --greedy 256

After an engine's timed runs, its weights become random normal(0, 0.02) (the same in every
engine; vLLM's dummy weights are so small that all logits tie), the first three document sets
of the workload are primed and decoded greedily for N tokens, all sequences in one batch, then
each sequence again alone (batch of one: the stock path on either attention). The token ids are
saved as OUT/greedy-ATTENTION.json. Printed and kept in the results: this engine's batched
tokens against its own alone tokens (how much a batch shape alone moves greedy decoding), and
when the other attention's file is there for the same prompts, batched against batched (the
comparison of the attentions) and alone against alone (both on the stock path: equal unless
the weights differ).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from lcr.bench.calibrate import greedy
from lcr.io import atomic_write_json
from lcr.rundir import RunDir
from lcr.shared_prefix.check import agreement, reinit_weights


def greedy_check(engine, base: RunDir, questions: list[dict], tokens: int, root: Path,
                 attention: str) -> dict:
    engine.llm.apply_model(reinit_weights)
    sets = list(dict.fromkeys(q["document_set_id"] for q in questions))[:3]
    qs = [q for q in questions if q["document_set_id"] in sets]
    prompts = [base.prompt_ids(q) for q in qs]
    digest = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]
    one, each = engine.params(greedy(1)), engine.params(greedy(tokens))
    engine.llm.reset_prefix_cache()
    shared = {q["document_set_id"]: p[: q["shared_prefix_tokens"]] for q, p in zip(qs, prompts)
              if q["shared_prefix_tokens"]}
    engine.generate(list(shared.values()), [one] * len(shared))  # documents cached first
    from vllm.inputs import TokensPrompt

    outs = engine.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                               [each] * len(prompts), use_tqdm=False)
    ids = [list(o.outputs[0].token_ids) for o in outs]
    alone = [list(engine.llm.generate([TokensPrompt(prompt_token_ids=p)], [each],
                                      use_tqdm=False)[0].outputs[0].token_ids) for p in prompts]
    atomic_write_json(root / f"greedy-{attention}.json",
                      {"prompts": digest, "tokens": ids, "alone": alone})
    result = {"attention": attention, "sequences": len(ids), "tokens_each": tokens,
              "batch_vs_alone": agreement(ids, alone)}
    _say(f"{attention} batched vs {attention} alone", result["batch_vs_alone"])
    other = root / ("greedy-stock.json" if attention != "stock" else
                    "greedy-shared_prefix.json")
    if other.exists():
        theirs = json.loads(other.read_text())
        if theirs["prompts"] == digest:
            result["agreement"] = agreement(theirs["tokens"], ids)
            _say(f"{attention} vs {other.stem[7:]}, batched", result["agreement"])
            if "alone" in theirs:
                result["alone_agreement"] = agreement(theirs["alone"], alone)
                _say(f"{attention} vs {other.stem[7:]}, alone", result["alone_agreement"])
    return result


def _say(what: str, a: dict) -> None:
    print(f"greedy: {what}: {a['agree']}/{a['tokens']} tokens agree ({a['share']:.2%}); "
          f"same history: {a['same_history_steps'] - a['same_history_flips']}/"
          f"{a['same_history_steps']} steps", file=sys.stderr, flush=True)
