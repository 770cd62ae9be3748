"""Tests of the corpus readers: JSONL, CSV, Parquet, image folders, M2KR rows and the dispatcher."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import pytest
from PIL import Image

from flmr_rag.data import CorpusError, read_corpus, read_csv, read_image_folder, read_jsonl, read_m2kr, read_parquet
from flmr_rag.data.rows import check_image

ROWS = [
    {"id": "t1", "text": "The red circle is round.", "image": None, "source": "wiki"},
    {"id": "m1", "text": "A blue square with a frame.", "image": "pictures/blue.png", "source": "web"},
    {"id": "i1", "text": "", "image": "pictures/red.png", "source": "web"},
    {"id": "empty", "text": "  ", "image": None, "source": "bad"},
    {"id": "broken", "text": "Has a corrupt picture.", "image": "pictures/corrupt.png", "source": "bad"},
    {"id": "missing", "text": "Has no picture file.", "image": "pictures/nowhere.png", "source": "bad"},
]
GOOD_IDS = ["t1", "m1", "i1"]


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.new("RGB", (16, 16), "blue").save(pictures / "blue.png")
    Image.new("RGB", (16, 16), "red").save(pictures / "red.png")
    (pictures / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated garbage")
    return tmp_path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return path


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


WRITERS = {"jsonl": _write_jsonl, "csv": _write_csv, "parquet": _write_parquet}


@pytest.mark.parametrize("format_name", sorted(WRITERS))
def test_reader_mixed_corpus_skips_bad_rows(format_name: str, corpus_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = WRITERS[format_name](corpus_dir / f"corpus.{format_name}", ROWS)
    with caplog.at_level(logging.WARNING):
        documents = list(read_corpus(path))
    assert [document.id for document in documents] == GOOD_IDS
    assert documents[0].image is None
    assert documents[1].image == corpus_dir / "pictures" / "blue.png"
    assert documents[2].text == ""
    assert documents[1].metadata == {"source": "web"}
    assert "skipped 3 of 6 rows" in caplog.text
    assert "2 with unreadable image" in caplog.text
    assert "1 with no text and no image" in caplog.text


@pytest.mark.parametrize("format_name", sorted(WRITERS))
def test_reader_strict_raises_on_bad_row(format_name: str, corpus_dir: Path) -> None:
    path = WRITERS[format_name](corpus_dir / f"corpus.{format_name}", ROWS)
    with pytest.raises(CorpusError, match="no text and no image"):
        list(read_corpus(path, strict=True))


@pytest.mark.parametrize("format_name", sorted(WRITERS))
def test_reader_duplicate_id_names_it(format_name: str, corpus_dir: Path) -> None:
    rows = [ROWS[0], {**ROWS[1], "id": "t1"}]
    path = WRITERS[format_name](corpus_dir / f"corpus.{format_name}", rows)
    with pytest.raises(CorpusError, match="duplicate document id 't1'"):
        list(read_corpus(path))


@pytest.mark.parametrize("format_name", sorted(WRITERS))
def test_reader_empty_corpus_raises(format_name: str, corpus_dir: Path) -> None:
    path = WRITERS[format_name](corpus_dir / f"corpus.{format_name}", [ROWS[3]])
    with pytest.raises(CorpusError, match="contains no documents"):
        list(read_corpus(path))


@pytest.mark.parametrize("format_name", sorted(WRITERS))
def test_reader_custom_columns(format_name: str, corpus_dir: Path) -> None:
    rows = [{"key": "a", "body": "First passage.", "picture": "pictures/red.png", "year": 2024}]
    path = WRITERS[format_name](corpus_dir / f"custom.{format_name}", rows)
    documents = list(read_corpus(path, id_column="key", text_column="body", image_column="picture"))
    assert documents[0].id == "a"
    assert documents[0].text == "First passage."
    assert documents[0].image == corpus_dir / "pictures" / "red.png"
    assert documents[0].metadata["year"] in (2024, "2024")


@pytest.mark.parametrize("format_name", sorted(WRITERS))
def test_reader_unknown_text_column_names_columns(format_name: str, corpus_dir: Path) -> None:
    path = WRITERS[format_name](corpus_dir / f"corpus.{format_name}", ROWS)
    with pytest.raises(CorpusError, match="no text column 'body'"):
        list(read_corpus(path, text_column="body", image_column="picture"))


def test_reader_missing_ids_are_left_for_generation(corpus_dir: Path) -> None:
    path = _write_jsonl(corpus_dir / "noids.jsonl", [{"text": "one"}, {"text": "two"}])
    documents = list(read_jsonl(path))
    assert [document.id for document in documents] == [None, None]


def test_missing_corpus_file_raises_at_call(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        read_corpus(tmp_path / "nowhere.jsonl")


def test_unknown_extension_raises(tmp_path: Path) -> None:
    path = tmp_path / "corpus.xml"
    path.write_text("<a/>")
    with pytest.raises(CorpusError, match="'.xml'"):
        read_corpus(path)


def test_jsonl_invalid_line_names_line(corpus_dir: Path) -> None:
    path = corpus_dir / "bad.jsonl"
    path.write_text('{"id": "a", "text": "ok"}\n{not json}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="line 2 is not valid JSON"):
        list(read_jsonl(path))


def test_jsonl_non_object_line_raises(corpus_dir: Path) -> None:
    path = corpus_dir / "list.jsonl"
    path.write_text('["a", "b"]\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="line 1 is a JSON list"):
        list(read_jsonl(path))


def test_jsonl_not_utf8_raises(corpus_dir: Path) -> None:
    path = corpus_dir / "latin.jsonl"
    path.write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(CorpusError, match="not UTF-8"):
        list(read_jsonl(path))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unreadable_corpus_file_raises(corpus_dir: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files without permission")
    path = _write_jsonl(corpus_dir / "locked.jsonl", ROWS[:1])
    path.chmod(0)
    with pytest.raises(CorpusError, match="cannot be read"):
        read_jsonl(path)


def test_csv_header_only_is_empty(corpus_dir: Path) -> None:
    path = corpus_dir / "header.csv"
    path.write_text("id,text\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="contains no documents"):
        list(read_csv(path))


def test_csv_empty_file_raises(corpus_dir: Path) -> None:
    path = corpus_dir / "nothing.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(CorpusError, match="is empty"):
        list(read_csv(path))


def test_tsv_uses_tab_delimiter(corpus_dir: Path) -> None:
    path = _write_csv(corpus_dir / "corpus.tsv", [{"id": "a", "text": "with, a comma"}], delimiter="\t")
    documents = list(read_corpus(path))
    assert documents[0].text == "with, a comma"


def test_parquet_image_bytes_struct(corpus_dir: Path) -> None:
    png = (corpus_dir / "pictures" / "red.png").read_bytes()
    rows = [{"id": "b", "text": "", "image": {"bytes": png, "path": None}}]
    documents = list(read_parquet(_write_parquet(corpus_dir / "bytes.parquet", rows)))
    assert documents[0].image == png


def test_parquet_not_parquet_raises(corpus_dir: Path) -> None:
    path = corpus_dir / "fake.parquet"
    path.write_text("not parquet")
    with pytest.raises(CorpusError, match="not a readable Parquet file"):
        read_parquet(path)


def test_parquet_missing_pyarrow_names_extra(corpus_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_parquet(corpus_dir / "c.parquet", ROWS[:1])
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"flmr-rag\[parquet\]"):
        read_parquet(path)


def test_image_folder_reads_captions(corpus_dir: Path) -> None:
    (corpus_dir / "pictures" / "blue.txt").write_text("A blue square.\n", encoding="utf-8")
    documents = list(read_image_folder(corpus_dir / "pictures"))
    assert [document.id for document in documents] == ["blue.png", "red.png"]
    assert documents[0].text == "A blue square."
    assert documents[1].text == ""
    assert documents[0].image == corpus_dir / "pictures" / "blue.png"


def test_image_folder_strict_rejects_corrupt(corpus_dir: Path) -> None:
    with pytest.raises(CorpusError, match="corrupt.png"):
        list(read_image_folder(corpus_dir / "pictures", strict=True))


def test_image_folder_without_images_is_empty(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no pictures here")
    with pytest.raises(CorpusError, match="contains no documents"):
        list(read_corpus(tmp_path))


def test_image_folder_missing_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image_folder(tmp_path / "absent")


@pytest.mark.parametrize("format_name", sorted(WRITERS))
def test_m2kr_rows(format_name: str, corpus_dir: Path) -> None:
    rows = [
        {"passage_id": "WIT_1", "passage_content": "title: Red. content: a red circle.", "page_title": "Red", "image_path": "pictures/red.png"},
        {"passage_id": "WIT_2", "passage_content": "title: Blue. content: a blue square.", "page_title": "Blue", "image_path": None},
    ]
    path = WRITERS[format_name](corpus_dir / f"m2kr.{format_name}", rows)
    documents = list(read_corpus(path, format="m2kr"))
    assert [document.id for document in documents] == ["WIT_1", "WIT_2"]
    assert documents[0].metadata == {"page_title": "Red"}
    assert documents[0].image == corpus_dir / "pictures" / "red.png"
    assert documents[1].image is None


def test_m2kr_rejects_folder_container(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="M2KR corpus"):
        read_m2kr(tmp_path)


def test_check_image_names_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gone.png does not exist"):
        check_image(tmp_path / "gone.png")


def test_reader_streams_lazily(corpus_dir: Path) -> None:
    rows = [{"id": str(number), "text": f"passage {number}"} for number in range(5)] + [{"id": "0", "text": "dup"}]
    iterator = read_jsonl(_write_jsonl(corpus_dir / "stream.jsonl", rows))
    first = next(iterator)
    assert first.id == "0"
    with pytest.raises(CorpusError, match="duplicate document id '0'"):
        list(iterator)


def test_stream_counts_skipped_rows(corpus_dir: Path) -> None:
    stream = read_corpus(_write_jsonl(corpus_dir / "corpus.jsonl", ROWS))
    documents = list(stream)
    assert len(documents) == 3
    assert stream.skipped == 3


def test_stream_length_hint_when_rows_known(corpus_dir: Path) -> None:
    import operator

    parquet = read_corpus(_write_parquet(corpus_dir / "corpus.parquet", ROWS))
    folder = read_corpus(corpus_dir / "pictures")
    jsonl = read_corpus(_write_jsonl(corpus_dir / "corpus.jsonl", ROWS))
    assert operator.length_hint(parquet) == len(ROWS)
    assert operator.length_hint(folder) == 3
    assert operator.length_hint(jsonl) == 0
    next(parquet)
    assert operator.length_hint(parquet) == len(ROWS) - 1
