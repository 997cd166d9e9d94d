"""The AA-LCR dataset: questions with their documents, from the hub or a local snapshot.

    questions = load_questions(cfg.data)     # list[Question], documents in filename order

A snapshot folder holds `AA-LCR_Dataset.csv` and `extracted_text/AA-LCR_extracted-text.zip`.
The zip is extracted once, atomically, beside itself (or into the lcr cache when that folder
is read-only). Archive names that are UTF-8 read as cp437 (`ΓÇÖ` for `’`) are repaired.
Questions and answers are kept byte for byte as in the CSV; ids, categories, set ids and file
names are stripped of surrounding blanks.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import sys
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from lcr.cache import build_once, cache_dir
from lcr.errors import InputError
from lcr.io import sha256_file

CSV_NAME = "AA-LCR_Dataset.csv"
ZIP_NAME = "extracted_text/AA-LCR_extracted-text.zip"
REQUIRED_COLUMNS = (
    "document_category",
    "document_set_id",
    "question_id",
    "question",
    "answer",
    "data_source_filenames",
)


class DataError(InputError, ValueError):
    """A problem with the dataset files, naming the file, line, question or document."""


@dataclass
class Question:
    question_id: str
    document_category: str
    document_set_id: str
    question: str
    answer: str  # `;`-separated criteria kept as in the CSV
    filenames: list[str]
    input_tokens: int | None = None
    documents: list[str] = field(default_factory=list, repr=False)

    @property
    def criteria(self) -> list[str]:
        return [c.strip() for c in self.answer.split(";") if c.strip()]


def repair_name(name: str) -> str:
    """Undo UTF-8 bytes decoded as cp437 (zip names without the UTF-8 flag); NFC-normalise."""
    try:
        fixed = name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        fixed = name
    return unicodedata.normalize("NFC", fixed)


def read_csv(path: Path) -> list[dict]:
    """Rows of the dataset CSV; a missing column or malformed row names the file and line."""
    if not path.is_file():
        raise DataError(f"{path}: dataset CSV not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x} at offset "
                        f"{e.start}); save the CSV as UTF-8 and run again") from None
    csv.field_size_limit(1 << 30)  # a long answer or question is legal data, not an attack
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(header)}"
            )
        rows, seen = [], {}
        for row in reader:
            line = reader.line_num
            if None in row or any(row.get(c) is None for c in header):
                raise DataError(
                    f"{path}:{line}: malformed row: expected {len(header)} fields"
                )
            for c in REQUIRED_COLUMNS:
                if not row[c].strip():
                    raise DataError(f"{path}:{line}: empty {c}")
            qid = row["question_id"].strip()
            if qid in seen:
                raise DataError(f"{path}:{line}: question_id {qid} repeats line {seen[qid]}")
            seen[qid] = line
            tokens = (row.get("input_tokens") or "").strip()
            if tokens and not tokens.isdigit():
                raise DataError(f"{path}:{line}: input_tokens {tokens!r} is not an integer")
            row["_line"] = line
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no questions")
    return rows


def extracted_dir(zip_path: Path) -> Path:
    """Extract the archive once (atomically) and return the folder; repairs mojibake names."""
    try:
        digest = sha256_file(zip_path)
    except FileNotFoundError:
        raise DataError(f"{zip_path}: document archive not found") from None
    name = f"{zip_path.stem}.{digest[:12]}"
    target = zip_path.parent / name
    if not os.access(zip_path.parent, os.W_OK):
        target = cache_dir() / "extracted" / name

    def extract(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(zip_path) as z:
                members = [m for m in z.infolist() if not m.is_dir()]
                if not members:
                    raise DataError(f"{zip_path}: the archive holds no documents")
                for m in members:
                    rel = Path(*[repair_name(p) for p in Path(m.filename).parts])
                    if rel.is_absolute() or ".." in rel.parts:
                        raise DataError(f"{zip_path}: unsafe member name {m.filename!r}")
                    out = tmp / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(z.read(m))
        except zipfile.BadZipFile as e:
            raise DataError(f"{zip_path}: not a valid zip archive ({e})") from None

    return build_once(target, extract)


def index_documents(root: Path) -> dict[tuple[str, str], dict[str, Path]]:
    """{(category, set_id): {file name: path}} from a tree laid out as .../{category}/{set}/file."""
    index: dict[tuple[str, str], dict[str, Path]] = {}
    for path in root.rglob("*"):
        if path.is_file() and len(path.relative_to(root).parts) >= 3:
            key = (path.parent.parent.name, path.parent.name)
            index.setdefault(key, {})[unicodedata.normalize("NFC", path.name)] = path
    return index


def _find(files: dict[str, Path], wanted: str) -> Path | None:
    if wanted in files:
        return files[wanted]
    lowered = {k.casefold(): v for k, v in files.items()}
    if wanted.casefold() in lowered:
        return lowered[wanted.casefold()]
    stems = {Path(k).stem.casefold(): v for k, v in files.items()}
    return stems.get(Path(wanted).stem.casefold())


def resolve_documents(row: dict, index, csv_path: Path) -> list[Path]:
    key = (row["document_category"].strip(), row["document_set_id"].strip())
    files = index.get(key, {})
    paths = []
    for raw in row["data_source_filenames"].split(";"):
        wanted = repair_name(raw.strip())
        if not wanted:
            continue
        found = _find(files, wanted)
        if found is None:
            pool = files or {n: p for f in index.values() for n, p in f.items()}
            near = difflib.get_close_matches(wanted, list(pool), n=3, cutoff=0.5)
            raise DataError(
                f"{csv_path}:{row['_line']}: question {row['question_id']}: document "
                f"{wanted!r} not found in lcr/{key[0]}/{key[1]}/"
                + (f"; near matches: {', '.join(near)}" if near else "")
            )
        paths.append(found)
    if not paths:
        raise DataError(f"{csv_path}:{row['_line']}: question {row['question_id']}: no documents")
    return paths


def load_snapshot(folder: str | Path, limit: int = 0) -> list[Question]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: dataset folder not found (data.path)")
    csv_path = folder / CSV_NAME
    rows = read_csv(csv_path)
    if limit:
        rows = rows[:limit]
    index = index_documents(extracted_dir(folder / ZIP_NAME))
    texts: dict[Path, str] = {}
    questions = []
    for row in rows:
        paths = resolve_documents(row, index, csv_path)
        for p in paths:
            if p not in texts:
                texts[p] = read_document(p)
        tokens = (row.get("input_tokens") or "").strip()
        questions.append(Question(
            question_id=row["question_id"].strip(),
            document_category=row["document_category"].strip(),
            document_set_id=row["document_set_id"].strip(),
            # Exactly as in the CSV: some AA-LCR questions end in spaces (one holds a
            # zero-width space), and stripping them changes the official prompt bytes.
            question=row["question"],
            answer=row["answer"],
            filenames=[p.name for p in paths],
            input_tokens=int(tokens) if tokens else None,
            documents=[texts[p] for p in paths],
        ))
    return questions


def read_document(path: Path) -> str:
    """A document's text; bytes that are not UTF-8 become U+FFFD, with a warning that names
    the file and how many there were (the prompt differs from the official one there)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        bad = text.count("\ufffd") - raw.count("\ufffd".encode())
        print(f"warning: {path}: {bad} byte sequence(s) are not UTF-8 and were replaced by "
              "U+FFFD", file=sys.stderr, flush=True)
        return text


OFFLINE_HELP = (
    "; without network, point lcr at a local copy: data.source = \"local\" and data.path = a "
    "folder holding AA-LCR_Dataset.csv and extracted_text/AA-LCR_extracted-text.zip (or put "
    "the files in the Hugging Face cache and set HF_HUB_OFFLINE=1); the gated model's "
    "tokenizer is needed too (model.tokenizer = a local folder)")


def hub_snapshot(repo: str, revision: str) -> Path:
    """Download (or find in HF_HOME's cache) the two dataset files at a pinned revision."""
    from huggingface_hub import snapshot_download

    from lcr.hub import hub_offline

    offline = hub_offline()  # fail at once offline, not after five retries per file
    try:
        return Path(snapshot_download(
            repo_id=repo, repo_type="dataset", revision=revision,
            allow_patterns=[CSV_NAME, ZIP_NAME], token=os.environ.get("HF_TOKEN") or None,
        ))
    except Exception as e:  # offline, gated, unknown revision: huggingface_hub's many errors
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if offline:
            reason = f"not in the local cache, and {offline}"
        raise DataError(f"cannot get {repo} at revision {revision} from the Hugging Face hub "
                        f"({type(e).__name__}: {reason[:200]}){OFFLINE_HELP}") from None


def snapshot_path(data) -> Path:
    """The local snapshot folder for a [data] section (downloading from the hub if needed)."""
    if data.source == "hf":
        return hub_snapshot(data.repo, data.revision)
    if data.source == "sample" and not data.path:
        from lcr.sample import sample_snapshot

        return sample_snapshot()
    return Path(data.path)


def load_questions(data) -> list[Question]:
    return load_snapshot(snapshot_path(data), limit=data.limit)
