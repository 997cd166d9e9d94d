"""AA-LCR data layer on the project's own sample snapshot: zip path, order, mojibake, errors."""

import zipfile

import pytest

from lcr.data import DataError, load_snapshot, repair_name
from lcr.sample import MOJIBAKE_NAME, build_rows_and_documents, write_snapshot


@pytest.fixture
def snapshot(tmp_path):
    folder = tmp_path / "snap"
    write_snapshot(folder)
    return folder


def test_loads_every_question_with_documents_in_csv_order(snapshot):
    rows, documents = build_rows_and_documents()
    questions = load_snapshot(snapshot)
    assert [q.question_id for q in questions] == [r["question_id"] for r in rows]
    for q, row in zip(questions, rows):
        names = row["data_source_filenames"].split(";")
        assert q.filenames == names
        want = [documents[f"lcr/{row['document_category']}/{row['document_set_id']}/{n}"]
                for n in names]
        assert q.documents == want


def test_mojibake_archive_name_is_repaired(snapshot):
    with zipfile.ZipFile(snapshot / "extracted_text" / "AA-LCR_extracted-text.zip") as z:
        raw = [n for n in z.namelist() if "Letter" in n]
    assert raw and "ΓÇÖ" in raw[0]  # what zipfile reads from a UTF-8 name without the flag
    q = load_snapshot(snapshot)[0]
    assert MOJIBAKE_NAME in q.filenames
    assert repair_name("InvestorΓÇÖs") == "Investor’s"
    assert repair_name("plain.txt") == "plain.txt"
    assert repair_name("café.txt") == "café.txt"


def test_mojibake_in_the_csv_is_repaired_too(snapshot):
    csv = snapshot / "AA-LCR_Dataset.csv"
    csv.write_text(csv.read_text(encoding="utf-8").replace("’", "ΓÇÖ"), encoding="utf-8")
    assert MOJIBAKE_NAME in load_snapshot(snapshot)[0].filenames


def test_extracts_once_beside_the_zip(snapshot):
    load_snapshot(snapshot)
    extracted = [p for p in (snapshot / "extracted_text").iterdir() if p.is_dir()]
    assert len(extracted) == 1
    stamp = extracted[0].stat().st_mtime_ns
    load_snapshot(snapshot)
    assert extracted[0].stat().st_mtime_ns == stamp


def test_answers_keep_their_criteria(snapshot):
    q = next(q for q in load_snapshot(snapshot) if ";" in q.answer)
    assert len(q.criteria) == 2


def test_missing_document_names_question_file_and_near_matches(snapshot):
    csv = snapshot / "AA-LCR_Dataset.csv"
    csv.write_text(csv.read_text(encoding="utf-8").replace(
        "Company_01 part 3.txt", "Company_01 part 3x.txt"), encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_snapshot(snapshot)
    msg = str(e.value)
    assert "AA-LCR_Dataset.csv:2: question 1: document 'Company_01 part 3x.txt' not found" in msg
    assert "near matches: Company_01 part 3.txt" in msg


def test_missing_column(snapshot):
    csv = snapshot / "AA-LCR_Dataset.csv"
    lines = csv.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].replace("question_id", "qid")
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"AA-LCR_Dataset.csv: missing column\(s\) question_id"):
        load_snapshot(snapshot)


def test_malformed_row_names_the_line(snapshot):
    csv = snapshot / "AA-LCR_Dataset.csv"
    lines = csv.read_text(encoding="utf-8").splitlines()
    lines[3] = "Academia,only,three"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"AA-LCR_Dataset.csv:4: malformed row"):
        load_snapshot(snapshot)


def test_corrupt_and_empty_zip(snapshot, tmp_path):
    zpath = snapshot / "extracted_text" / "AA-LCR_extracted-text.zip"
    zpath.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DataError, match="not a valid zip archive"):
        load_snapshot(snapshot)
    with zipfile.ZipFile(zpath, "w"):
        pass
    with pytest.raises(DataError, match="the archive holds no documents"):
        load_snapshot(snapshot)
    # a failed extraction leaves nothing behind that looks finished
    assert not [p for p in zpath.parent.iterdir() if p.is_dir()]


def test_missing_folder_and_csv(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        load_snapshot(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="dataset CSV not found"):
        load_snapshot(tmp_path / "empty")


def _rewrite_rows(csv_path, change):
    """Rewrite the snapshot's CSV through the csv module, `change(rows)` in between."""
    import csv
    import io

    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    change(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    csv_path.write_text(buf.getvalue(), encoding="utf-8")


def test_question_and_answer_text_is_kept_exactly_as_in_the_csv(snapshot):
    from lcr.prompts import candidate_messages

    trailing = "How many units were sold in 2023?   "
    zero_width = "Which firm\u200b reported the larger margin? "

    def change(rows):
        rows[0]["question"], rows[0]["answer"] = trailing, " 1,234 units "
        rows[1]["question"] = zero_width
        rows[1]["question_id"] = f"  {rows[1]['question_id']} "  # ids are still stripped

    csv_path = snapshot / "AA-LCR_Dataset.csv"
    _rewrite_rows(csv_path, change)
    first, second = load_snapshot(snapshot)[:2]
    assert first.question == trailing and first.answer == " 1,234 units "
    assert second.question == zero_width and second.question_id == second.question_id.strip()
    for q, text in ((first, trailing), (second, zero_width)):
        user = candidate_messages(q.documents, q.question)[-1]["content"]
        assert f"START QUESTION\n\n{text}\n\nEND QUESTION\n" in user
    assert "\u200b" in candidate_messages(second.documents, second.question)[-1]["content"]
