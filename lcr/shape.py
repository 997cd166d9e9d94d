"""An AA-LCR-shaped workload without the data: 30 document sets, 100 questions, ~99K tokens.

    questions = aalcr_shaped(seed=0, scale=1.0)   # questions.jsonl-like dicts (no prompts)

Used by the planner tests and by `lcr bench`; the shape follows the dataset card: 63 questions
in 16 company-document sets, the rest in 14 sets of 2-3 questions, sets of 70K-125K tokens.
"""

from __future__ import annotations

import random

# Questions per document set: 16 company sets hold 63 questions, 14 other sets hold 37.
QUESTIONS_PER_SET = [4] * 15 + [3] + [3] * 9 + [2] * 5


def aalcr_shaped(seed: int = 0, scale: float = 1.0, sets: int | None = None) -> list[dict]:
    """Question records with prompt_tokens / shared_prefix_tokens, as prepare writes them.

    `scale` < 1 shrinks both the number of sets and the document length (a quick run).
    """
    rng = random.Random(seed)
    per_set = QUESTIONS_PER_SET
    n_sets = sets or max(1, round(len(per_set) * min(scale, 1.0)))
    questions = []
    for s in range(n_sets):
        n = per_set[s % len(per_set)]
        docs = int(rng.randint(70_000, 125_000) * min(scale, 1.0))
        for _ in range(n):
            suffix = rng.randint(30, 120)
            questions.append({
                "question_id": str(len(questions) + 1),
                "document_set_id": f"set{s:02d}",
                "document_category": "Company Documents" if s < 16 else "Other",
                "prompt_tokens": docs + suffix,
                "shared_prefix_tokens": docs if n > 1 else 0,
                "status": "ok",
            })
    return questions
