"""Splitting documents into chunks that respect headings and sentences, with overlap.

A document is first cut into sections at Markdown headings (the heading path, e.g.
``Setup > Redis``, travels with each chunk), then each section into sentences, which are
packed into chunks of about ``target_words`` words (90: about 120 tokens, which the
embedding model reads whole at its 128-token limit); consecutive chunks of a section share
``overlap_words`` words of whole sentences. A sentence longer than ``max_words`` is cut at
word boundaries. Offsets are character positions in the document's text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
#: A sentence ends at . ! ? (optionally followed by a closing quote or bracket) before
#: whitespace, or at a blank line.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")
WORD = re.compile(r"\S+")
CHUNKER_VERSION = "1"


@dataclass(frozen=True)
class ChunkingConfig:
    """How big chunks are and how much neighbours overlap (in words)."""

    target_words: int = 90
    max_words: int = 150
    overlap_words: int = 15

    def fingerprint(self) -> str:
        """Changes whenever chunking would produce different chunks."""
        return f"v{CHUNKER_VERSION}-{self.target_words}-{self.max_words}-{self.overlap_words}"


@dataclass(frozen=True)
class TextChunk:
    """A chunk's text with where it sits in the document."""

    position: int
    text: str
    start: int
    end: int
    heading: str


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    words: int


def chunk_id(document_id: str, position: int, text: str) -> str:
    """Stable id: document id + position + content hash."""
    digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]
    return f"{document_id}#{position:05d}-{digest}"


def sections(text: str) -> Iterator[tuple[str, int, int]]:
    """(heading path, start, end) of each section; headings nest by level."""
    path: list[tuple[int, str]] = []
    start = 0
    heading = ""
    for match in HEADING.finditer(text):
        if match.start() > start:
            yield heading, start, match.start()
        level, title = len(match.group(1)), match.group(2).strip()
        path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
        heading = " > ".join(t for _, t in path)
        start = match.end()
    if start < len(text):
        yield heading, start, len(text)


def _sentences(text: str, start: int, end: int, max_words: int) -> Iterator[_Span]:
    """Sentence spans of ``text[start:end]``, long ones cut at word boundaries."""
    cursor = start
    segment = text[start:end]
    boundaries = [m.end() + start for m in SENTENCE_END.finditer(segment)] + [end]
    for boundary in boundaries:
        piece = text[cursor:boundary]
        words = list(WORD.finditer(piece))
        if words:
            for i in range(0, len(words), max_words):
                group = words[i : i + max_words]
                yield _Span(cursor + group[0].start(), cursor + group[-1].end(), len(group))
        cursor = boundary


def chunk_text(text: str, config: ChunkingConfig | None = None) -> list[TextChunk]:
    """Chunks of a whole document, in order."""
    config = config or ChunkingConfig()
    chunks: list[TextChunk] = []
    for heading, start, end in sections(text):
        spans = list(_sentences(text, start, end, config.max_words))
        i = 0
        while i < len(spans):
            j, words = i, 0
            while j < len(spans) and (words == 0 or words + spans[j].words <= config.target_words):
                words += spans[j].words
                j += 1
            body = text[spans[i].start : spans[j - 1].end]
            if heading:
                body_text = f"{heading.split(' > ')[-1]}: {' '.join(body.split())}"
            else:
                body_text = " ".join(body.split())
            chunks.append(
                TextChunk(len(chunks), body_text, spans[i].start, spans[j - 1].end, heading)
            )
            if j >= len(spans):
                break
            back, overlap = j, 0
            while back - 1 > i and overlap + spans[back - 1].words <= config.overlap_words:
                back -= 1
                overlap += spans[back].words
            i = back
    return chunks
