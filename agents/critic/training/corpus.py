"""The training corpus: Wikipedia lead extracts, one passage each, split by document."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.common.corpus import wiki_extracts_file
from agents.common.grounding.text import passage_sentences

SPLITS = (("train", 0.6), ("validation", 0.2), ("test", 0.2))


@dataclass(frozen=True)
class Document:
    """One passage of the training corpus."""

    key: str
    title: str
    text: str
    sentences: tuple[str, ...]


def read_corpus(path: Path | None = None) -> list[Document]:
    """Every extract of ``path`` (default: the packaged file) with at least two sentences and
    25 words, in title order."""
    records: dict[str, dict[str, Any]] = json.loads(
        (path or wiki_extracts_file()).read_text(encoding="utf-8")
    )
    documents = []
    for key, record in sorted(records.items()):
        text = " ".join(str(record.get("extract") or "").split())
        sentences = tuple(s for s in passage_sentences(text) if len(s.split()) >= 4)
        if len(sentences) >= 2 and len(text.split()) >= 25:
            documents.append(Document(key, str(record.get("title") or key), text, sentences))
    return documents


def split_documents(
    documents: Sequence[Document], count: int, seed: int
) -> dict[str, list[Document]]:
    """``count`` documents drawn with ``seed`` and cut 60/20/20 into train/validation/test."""
    rng = random.Random(seed)
    chosen = rng.sample(list(documents), min(count, len(documents)))
    out: dict[str, list[Document]] = {}
    start = 0
    for i, (name, share) in enumerate(SPLITS):
        end = len(chosen) if i == len(SPLITS) - 1 else start + round(share * len(chosen))
        out[name] = chosen[start:end]
        start = end
    return out
