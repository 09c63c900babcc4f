"""Chunking and file readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.retriever import readers
from agents.retriever.chunking import ChunkingConfig, chunk_id, chunk_text
from agents.retriever.readers import Skipped, SourceDocument, read_paths

MARKDOWN = (
    """# Guide
Scriptorium answers questions. It cites its sources.

## Setup
"""
    + " ".join(f"Step {i} installs part {i} of the stack." for i in range(60))
    + """

## Use
Ask a question. Read the answer.
"""
)


def test_chunks_follow_headings_sentences_and_overlap() -> None:
    chunks = chunk_text(MARKDOWN, ChunkingConfig(target_words=60, max_words=100, overlap_words=16))
    assert chunks[0].heading == "Guide"
    assert {c.heading for c in chunks} == {"Guide", "Guide > Setup", "Guide > Use"}
    setup = [c for c in chunks if c.heading == "Guide > Setup"]
    assert len(setup) >= 5
    for chunk in chunks:
        raw = MARKDOWN[chunk.start : chunk.end]
        assert raw.rstrip().endswith((".", "!", "?"))  # whole sentences
        assert len(chunk.text.split()) <= 60 + 2
    first, second = setup[0], setup[1]
    assert second.start < first.end  # neighbours overlap
    assert MARKDOWN[second.start : first.end].strip().endswith(".")


def test_a_very_long_sentence_is_cut_at_word_boundaries() -> None:
    text = " ".join(["word"] * 500) + "."
    chunks = chunk_text(text, ChunkingConfig(target_words=120, max_words=200, overlap_words=0))
    assert max(len(c.text.split()) for c in chunks) <= 200
    assert sum(len(c.text.split()) for c in chunks) == 500


def test_chunk_ids_are_stable_and_content_addressed() -> None:
    assert chunk_id("doc", 3, "text") == chunk_id("doc", 3, "text")
    assert chunk_id("doc", 3, "text") != chunk_id("doc", 3, "text!")
    assert chunk_id("doc", 3, "text").startswith("doc#00003-")


def _minimal_pdf(text: str) -> bytes:
    """A one-page PDF whose page shows ``text`` (built by hand, no PDF writer needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "guide.md").write_text(MARKDOWN)
    (tmp_path / "notes.txt").write_text("Plain notes about Valkey streams.\n")
    (tmp_path / "page.html").write_text(
        "<html><head><title>Page</title><style>p{}</style></head><body><h1>Heading</h1>"
        "<p>Paragraph one.</p><script>var x;</script><p>Two &amp; three.</p></body></html>"
    )
    (tmp_path / "paper.pdf").write_bytes(_minimal_pdf("Lances store vectors"))
    (tmp_path / "records.jsonl").write_text(
        json.dumps({"id": "r1", "text": "First record.", "title": "One", "tags": ["a"]})
        + "\n"
        + "{broken json\n"
        + json.dumps({"text": ""})
        + "\n"
        + json.dumps({"text": "Second record.", "metadata": {"lang": "en"}})
        + "\n"
    )
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n")
    (tmp_path / "binary.txt").write_bytes(b"abc\x00def")
    (tmp_path / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "corrupt.pdf").write_bytes(b"%PDF-1.4 garbage")
    (tmp_path / ".hidden.md").write_text("never read")
    return tmp_path


def test_every_supported_kind_is_read_and_the_rest_skipped_with_reasons(corpus: Path) -> None:
    items = list(read_paths([corpus, corpus / "missing.md"], root=corpus))
    docs = {i.id: i for i in items if isinstance(i, SourceDocument)}
    skipped = {Path(i.source).name.split(":")[0]: i.reason for i in items if isinstance(i, Skipped)}
    assert set(docs) == {"guide.md", "notes.txt", "page.html", "paper.pdf", "r1", "records.jsonl:4"}
    assert docs["page.html"].title == "Page"
    assert "# Heading" in docs["page.html"].text
    assert "var x" not in docs["page.html"].text
    assert "Two & three." in docs["page.html"].text
    assert "Lances store vectors" in docs["paper.pdf"].text
    assert docs["r1"].metadata == {"tags": ["a"]}
    assert docs["records.jsonl:4"].metadata == {"lang": "en"}
    assert "unsupported file type .png" in skipped["image.png"]
    assert "NUL" in skipped["binary.txt"]
    assert skipped["latin1.md"] == "not UTF-8 text"
    assert "unreadable .pdf" in skipped["corrupt.pdf"]
    assert "no such file" in skipped["missing.md"]
    reasons = [i.reason for i in items if isinstance(i, Skipped) and "records.jsonl" in i.source]
    assert any("invalid JSON" in r for r in reasons)
    assert any("empty text" in r for r in reasons)


def test_a_huge_text_file_is_read_in_bounded_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "PART_CHARS", 1000)
    paragraph = "A sentence about storage. " * 8 + "\n\n"
    (tmp_path / "big.txt").write_text(paragraph * 100)
    docs = [d for d in read_paths([tmp_path / "big.txt"], root=tmp_path)]
    assert len(docs) > 10
    assert all(isinstance(d, SourceDocument) and len(d.text) <= 1000 + len(paragraph) for d in docs)
    assert [d.id for d in docs][:2] == ["big.txt#part-0001", "big.txt#part-0002"]
    assert "".join(d.text for d in docs if isinstance(d, SourceDocument)) == paragraph * 100
