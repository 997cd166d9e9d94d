"""The bench's workload: AA-LCR-shaped (or real) lengths, random token ids, a dummy 8B model.

    questions = workload(args, cfg)             # question records, lengths only
    write_workload(RunDir(root / "workload"), questions, vocab)   # questions.jsonl + prompts/

Each document set's documents are one random token sequence that all its questions start
with, so the engine's prefix cache sees the same sharing a real run does; `--sets N` keeps the
first N sets, `--output-tokens` the answer lengths (every unit decodes them, ignore_eos).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from lcr.config import Config, ConfigError
from lcr.io import atomic_write_jsonl, atomic_write_npy, atomic_write_text
from lcr.rundir import RunDir

# Public Llama-3.1-8B shapes (config.json of meta-llama/Llama-3.1-8B-Instruct).
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "hidden_act": "silu",
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "attention_bias": False, "mlp_bias": False,
}

def dummy_model_dir(root: Path) -> Path:
    d = root / "llama31-8b-shapes"
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "config.json", json.dumps(LLAMA31_8B, indent=1))
    return d


def write_workload(rd: RunDir, questions: list[dict], vocab: int, seed: int = 0) -> None:
    """questions.jsonl + prompts/: each set's documents once, each question its own suffix."""
    rng = np.random.default_rng(seed)
    lo, hi = min(1000, vocab // 4), vocab - 300
    docs: dict[str, np.ndarray] = {}
    for i, q in enumerate(questions):
        shared = q["shared_prefix_tokens"]
        if q["document_set_id"] not in docs:
            docs[q["document_set_id"]] = rng.integers(lo, hi, size=shared, dtype=np.int32)
        ids = np.concatenate([
            np.array([lo - 1], dtype=np.int32), docs[q["document_set_id"]][: shared - 1],
            rng.integers(lo, hi, size=q["prompt_tokens"] - max(shared, 1), dtype=np.int32),
        ])
        q["prompt_file"] = f"prompts/p-{i:04d}.npy"
        atomic_write_npy(rd.path / q["prompt_file"], ids)
        q["prompt_sha256"] = hashlib.sha256(ids.tobytes()).hexdigest()
    atomic_write_jsonl(rd.questions_file, questions)


def output_lengths(spec: str, units: list[dict], seed: int = 0) -> int:
    """Apply --output-tokens to the units; return the answer budget (max_new_tokens).

    "N": every unit decodes N tokens. "lognormal:MEDIAN:SIGMA:MAX": each unit decodes its own
    length drawn from a log-normal distribution, capped at MAX, the budget."""
    if spec.isdigit() and int(spec) > 0:
        return int(spec)
    parts = spec.split(":")
    try:
        assert parts[0] == "lognormal" and len(parts) == 4
        median, sigma, cap = float(parts[1]), float(parts[2]), int(parts[3])
        assert median > 0 and sigma >= 0 and cap > 0
    except (AssertionError, ValueError):
        raise ConfigError(f"--output-tokens {spec!r}: expected a positive whole number or "
                          "lognormal:MEDIAN:SIGMA:MAX, e.g. lognormal:300:0.8:2048") from None
    rng = np.random.default_rng(seed)
    for u in units:
        u["max_tokens"] = int(min(cap, max(1, round(median * math.exp(sigma * rng.normal())))))
    return cap


def workload(args, cfg: Config) -> list[dict]:
    """Question records (lengths only), every prompt cut to fit the context window."""
    from lcr.shape import aalcr_shaped

    if args.run_dir:
        keep = ("question_id", "document_set_id", "document_category", "prompt_tokens",
                "shared_prefix_tokens", "status")
        questions = [{k: q[k] for k in keep} for q in RunDir(args.run_dir).load_questions()
                     if q["status"] == "ok"]
    else:
        questions = aalcr_shaped(seed=0, scale=args.scale)
    if args.sets:
        first = list(dict.fromkeys(q["document_set_id"] for q in questions))[: args.sets]
        questions = [q for q in questions if q["document_set_id"] in first]
    limit = cfg.engine.max_model_len - cfg.sampling.max_new_tokens - 200
    longest: dict[str, int] = {}
    for q in questions:
        longest[q["document_set_id"]] = max(longest.get(q["document_set_id"], 0),
                                            q["prompt_tokens"])
    for q in questions:  # keep every prompt inside the window (the card's longest do not fit)
        over = max(0, longest[q["document_set_id"]] - limit)
        q["prompt_tokens"] -= over
        q["shared_prefix_tokens"] = max(0, q["shared_prefix_tokens"] - over)
    return questions
