"""Word-level helpers the training generators share: cleaning words, finishing sentences,
finding names."""

from __future__ import annotations

import re
from collections.abc import Sequence

from agents.common.grounding.text import NEGATIONS, STOPWORDS, word_set

CUT_WORDS = frozenset(("and", "which", "who", "where", "while", "but", "whose"))
AUX = word_set("is are was were has have had can could will would does did should may must")


def finish(words: Sequence[str]) -> str:
    """``words`` as a sentence: capitalised, ending in a full stop."""
    text = " ".join(words).strip().rstrip(",;:")
    if text and text[-1] not in ".!?":
        text += "."
    return text[:1].upper() + text[1:]


def plain(word: str) -> str:
    """A lower-case content word without its punctuation, or ""."""
    core = word.strip(".,;:!?\"'()[]")
    ok = core.isalpha() and core.islower() and core not in STOPWORDS and core not in NEGATIONS
    return core if ok else ""


def articles(text: str) -> str:
    """``a`` / ``an`` agreeing with the next word after a rewording."""
    text = re.sub(r"\b([Aa]) (?=[aeioAEIO])", r"\1n ", text)
    return re.sub(r"\b([Aa])n (?=[b-df-gj-np-tv-z])", r"\1 ", text)


def body(sentence: str) -> str:
    """A sentence without its final punctuation."""
    return sentence.strip().rstrip(".!?").rstrip()


_NAME = re.compile(r"(?<!^)(?<![.!?] )\b[A-Z][\w'\-]+(?: (?:of |de |von |van )?[A-Z][\w'\-]+)*")


def find_names(sentence: str) -> list[str]:
    """Capitalised names not at the start of the sentence, without function words."""
    found = []
    for m in _NAME.finditer(sentence):
        name = m.group(0)
        if m.start() == 0 or name.split()[0].lower() in STOPWORDS:
            continue
        found.append(name)
    return list(dict.fromkeys(found))
