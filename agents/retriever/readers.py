"""Reading files into documents: .txt, .md, .html, .pdf and .jsonl.

Readers stream: a .jsonl file is read line by line (one document per line) and a long text
file is cut into parts of at most ``part_chars`` characters at paragraph boundaries (each
part is its own document, ``<path>#part-0002``), so memory stays bounded whatever the file
size. A file that cannot be read becomes a :class:`Skipped` with the reason; nothing of it
is stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from protocol.extras import extra

SUPPORTED = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl")
PART_CHARS = 1_000_000


@dataclass(frozen=True)
class SourceDocument:
    """A document read from somewhere, before chunking."""

    id: str
    text: str
    source: str
    kind: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """Something that was not ingested, and why."""

    source: str
    reason: str


Item = SourceDocument | Skipped


def iter_paths(paths: Iterable[Path]) -> Iterator[Path | Skipped]:
    """Files under the given files and folders, sorted, hidden ones left out."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        elif path.is_file():
            yield path
        else:
            yield Skipped(str(path), "no such file or folder")


def read_paths(paths: Iterable[Path], *, root: Path | None = None) -> Iterator[Item]:
    """Documents (or skips) from files and folders; ids are paths relative to ``root``."""
    for item in iter_paths(paths):
        if isinstance(item, Skipped):
            yield item
            continue
        yield from read_file(item, doc_id=_relative(item, root))


def _relative(path: Path, root: Path | None) -> str:
    resolved = path.resolve()
    if root is not None:
        try:
            return resolved.relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return resolved.as_posix()


def read_file(path: Path, *, doc_id: str | None = None) -> Iterator[Item]:
    """The documents in one file (several for .jsonl and very long files)."""
    doc_id = doc_id or path.as_posix()
    suffix = path.suffix.lower()
    source = str(path)
    if suffix not in SUPPORTED:
        yield Skipped(
            source, f"unsupported file type {suffix or '(none)'}; supported: " + " ".join(SUPPORTED)
        )
        return
    try:
        if suffix == ".jsonl":
            yield from _read_jsonl(path, doc_id)
        elif suffix == ".pdf":
            yield from _parts(doc_id, _pdf_text(path), source, "pdf", path.stem)
        elif suffix in (".html", ".htm"):
            text, title = _html_text(path.read_text(encoding="utf-8"))
            yield from _parts(doc_id, text, source, "html", title or path.stem)
        else:
            kind = "markdown" if suffix in (".md", ".markdown") else "text"
            yield from _read_text(path, doc_id, kind)
    except UnicodeDecodeError:
        yield Skipped(source, "not UTF-8 text")
    except OSError as exc:
        yield Skipped(source, f"unreadable: {exc.strerror or exc}")
    except Exception as exc:  # a corrupt PDF raises many kinds of errors
        yield Skipped(source, f"unreadable {suffix} file: {type(exc).__name__}: {exc}")


def _read_text(path: Path, doc_id: str, kind: str) -> Iterator[Item]:
    """A text file in parts of at most PART_CHARS characters, cut at blank lines."""
    source = str(path)
    with path.open(encoding="utf-8") as handle:
        buffer: list[str] = []
        size = 0
        part = 0
        whole = path.stat().st_size <= PART_CHARS
        for line in handle:
            if "\x00" in line:
                yield Skipped(source, "binary content (NUL bytes) in a text file")
                return
            buffer.append(line)
            size += len(line)
            if size >= PART_CHARS and not line.strip():
                part += 1
                yield SourceDocument(
                    f"{doc_id}#part-{part:04d}",
                    "".join(buffer),
                    source,
                    kind,
                    path.stem,
                    {"part": part},
                )
                buffer, size = [], 0
        text = "".join(buffer)
        if whole or part == 0:
            yield SourceDocument(doc_id, text, source, kind, path.stem)
        elif text.strip():
            part += 1
            yield SourceDocument(
                f"{doc_id}#part-{part:04d}", text, source, kind, path.stem, {"part": part}
            )


def _parts(doc_id: str, text: str, source: str, kind: str, title: str) -> Iterator[Item]:
    if len(text) <= PART_CHARS:
        yield SourceDocument(doc_id, text, source, kind, title)
        return
    part, start = 0, 0
    while start < len(text):
        cut = text.rfind("\n\n", start, start + PART_CHARS)
        end = (
            len(text)
            if start + PART_CHARS >= len(text)
            else (cut if cut > start else start + PART_CHARS)
        )
        part += 1
        yield SourceDocument(
            f"{doc_id}#part-{part:04d}", text[start:end], source, kind, title, {"part": part}
        )
        start = end


def _read_jsonl(path: Path, doc_id: str) -> Iterator[Item]:
    source = str(path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{source}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Skipped(where, f"invalid JSON: {exc.msg}")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                yield Skipped(where, 'each line must be an object with a "text" string')
                continue
            if not record["text"].strip():
                yield Skipped(where, "empty text")
                continue
            raw_meta = record.get("metadata")
            meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
            extra = {
                k: v
                for k, v in record.items()
                if k not in ("text", "id", "title", "source", "metadata")
            }
            yield SourceDocument(
                id=str(record.get("id") or f"{doc_id}:{number}"),
                text=record["text"],
                source=str(record.get("source") or where),
                kind="jsonl",
                title=str(record.get("title") or ""),
                metadata={**extra, **meta},
            )


def _pdf_text(path: Path) -> str:
    with extra("retrieval", feature="reading PDF files"):
        from pypdf import PdfReader

    reader = PdfReader(path)
    pages = [(page.extract_text() or "").strip() for page in reader.pages]
    return "\n\n".join(page for page in pages if page)


class _HtmlText(HTMLParser):
    """HTML to text with Markdown-style headings (scripts and styles dropped)."""

    BLOCKS = frozenset({"p", "div", "li", "br", "tr", "section", "article", "pre", "blockquote"})
    SKIP = frozenset({"script", "style", "noscript", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.out.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCKS:
            self.out.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title += data.strip()
            return
        self.out.append(data.replace("\n", " "))


def _html_text(html: str) -> tuple[str, str]:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    lines = [
        " ".join(line.split()) if not line.startswith("#") else line.strip()
        for line in text.split("\n")
    ]
    return "\n".join(lines), parser.title
