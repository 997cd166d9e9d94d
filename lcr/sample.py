"""A small AA-LCR-shaped snapshot made from synthetic text: same CSV columns, same zip layout.

    path = sample_snapshot()      # ~/.cache/lcr/sample-aalcr-v2/ (built once, deterministic)

Used by tests and `lcr demo`. Eight document sets in seven categories with 1-5 questions
each; one archive name carries the cp437 mojibake of real AA-LCR archives; one set is long
enough to exceed the tiny model's context window, so the demo shows a too_long unit.
"""

from __future__ import annotations

import csv
import io
import random
import zipfile
from pathlib import Path

from lcr.cache import build_once, cache_dir

SAMPLE_VERSION = "v2"
CATEGORIES = [
    "Company Documents",
    "Industry Reports",
    "Government Consultations",
    "Academia",
    "Legal",
    "Marketing Materials",
    "Survey Reports",
]
# (category index, number of questions, documents, words per document)
SETS = [
    (0, 5, 3, 420),
    (0, 3, 2, 380),
    (1, 2, 2, 350),
    (2, 4, 3, 300),
    (3, 1, 2, 400),
    (4, 2, 2, 360),
    (5, 3, 2, 330),
    (6, 1, 4, 2600),  # too long for the tiny model's 4096-token window
]
MOJIBAKE_NAME = "Investor’s Letter 2023.txt"  # stored with UTF-8 bytes but no UTF-8 flag
# The columns of AA-LCR_Dataset.csv, in its order (lcr.data reads them by name).
CSV_COLUMNS = ["document_category", "document_set_id", "question_id", "question", "answer",
               "data_source_filenames", "data_source_urls", "input_tokens"]
METRICS = ["revenue", "headcount", "margin", "backlog", "capex", "churn", "output", "budget"]


def vocabulary() -> list[str]:
    """A sorted, deterministic vocabulary of pronounceable pseudo-words."""
    onsets = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"]
    vowels = ["a", "e", "i", "o", "u"]
    codas = ["", "n", "r", "s", "l"]
    words = {o + v + c + o2 + v2 for o in onsets for v in vowels for c in codas
             for o2 in ("d", "m", "t") for v2 in ("a", "o")}
    return sorted(words)


def _entity(rng: random.Random, words: list[str]) -> str:
    return f"{rng.choice(words).capitalize()} {rng.choice(words).capitalize()}"


def _filler(rng: random.Random, words: list[str], n: int) -> list[str]:
    sentences, count = [], 0
    while count < n:
        k = rng.randint(6, 14)
        sentences.append(" ".join(rng.choice(words) for _ in range(k)).capitalize() + ".")
        count += k
    return sentences


def build_rows_and_documents(seed: int = 0, scale: float = 1.0):
    """CSV rows and {archive path: text} for the sample snapshot; `scale` multiplies every
    document's length (jobs/gpu-smoke uses 40: prompts of about 60K-115K Llama-3 tokens)."""
    rng = random.Random(seed)
    words = vocabulary()
    rows, documents = [], {}
    qid = 0
    for set_no, (cat, n_questions, n_docs, doc_words) in enumerate(SETS, start=1):
        doc_words = round(doc_words * scale)
        category = CATEGORIES[cat]
        set_id = f"{category.split()[0]}_{set_no:02d}"
        filenames = [f"{set_id} part {d + 1}.txt" for d in range(n_docs)]
        if set_no == 1:
            filenames[1] = MOJIBAKE_NAME
        facts = []
        for q in range(n_questions):
            entity = _entity(rng, words)
            metric = METRICS[(set_no + q) % len(METRICS)]
            year = 2015 + rng.randrange(10)
            value = rng.randrange(10, 990)
            facts.append((entity, metric, year, value, rng.randrange(n_docs)))
        for d, name in enumerate(filenames):
            body = _filler(rng, words, doc_words)
            for entity, metric, year, value, where in facts:
                if where == d:
                    body.insert(rng.randrange(len(body) + 1),
                                f"The {metric} of {entity} in {year} was {value} million.")
            documents[f"lcr/{category}/{set_id}/{name}"] = "\n".join(
                " ".join(body[i:i + 5]) for i in range(0, len(body), 5)
            )
        for entity, metric, year, value, _ in facts:
            qid += 1
            question = f"What was the {metric} of {entity} in {year}, in millions?"
            answer = f"{value} million"
            if qid == 2:  # a multi-criteria answer, as some AA-LCR answers are
                question = f"What was the {metric} of {entity}, and in which year?"
                answer = f"{value} million;{year}"
            rows.append({
                "document_category": category,
                "document_set_id": set_id,
                "question_id": str(qid),
                "question": question,
                "answer": answer,
                "data_source_filenames": ";".join(filenames),
                "data_source_urls": ";".join(f"https://example.org/{set_id}/{d + 1}"
                                             for d in range(n_docs)),
                "input_tokens": str(int(1.3 * n_docs * doc_words)),
            })
    return rows, documents


class _RawNameInfo(zipfile.ZipInfo):
    """Writes the name's bytes as given, without the UTF-8 flag, as AA-LCR's archive does."""

    def _encodeFilenameFlags(self):
        return self.filename.encode("cp437"), self.flag_bits


def write_snapshot(folder: Path, seed: int = 0, scale: float = 1.0) -> None:
    rows, documents = build_rows_and_documents(seed, scale)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    (folder / "AA-LCR_Dataset.csv").write_text(buf.getvalue(), encoding="utf-8")
    zpath = folder / "extracted_text" / "AA-LCR_extracted-text.zip"
    zpath.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in sorted(documents.items()):
            # UTF-8 bytes seen through cp437: exactly what zipfile reads back from AA-LCR's zip
            raw_name = name.encode("utf-8").decode("cp437")
            info = _RawNameInfo(raw_name, date_time=(2025, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, text)


def sample_snapshot() -> Path:
    return build_once(cache_dir() / f"sample-aalcr-{SAMPLE_VERSION}", write_snapshot)


def corpus_text() -> str:
    """Text to train the tiny tokenizer on: the sample's documents and questions."""
    rows, documents = build_rows_and_documents()
    parts = list(documents.values()) + [r["question"] + " " + r["answer"] for r in rows]
    return "\n".join(parts)
