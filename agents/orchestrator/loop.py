"""The answer loop: retrieve -> write -> critique, revising until accepted or out of rounds.

A plain async generator of typed round events with no transport inside: the caller supplies
a :class:`Team` (the agents over A2A in production, scripted peers in tests) and decides what
to do with each event. The hard stop is the ``for`` over ``range(1, max_rounds + 1)`` in
:func:`answer_rounds`; when rounds run out the answer falls back to quoting the passages
(or, when they lack what the question asks, to saying so) — never to a made-up answer.

Corrective retrieval: when the critic reports that the passages miss terms of the question,
the next round searches again with a query rewritten around the missing terms; when the
passages cover the terms but the draft still fails, the next round makes a second hop with
the names the first passages mention (questions often need two documents).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from protocol.payloads import (
    AnswerRequest,
    Critique,
    CritiqueRequest,
    Draft,
    Passage,
    RoundRecord,
    SearchRequest,
    WriteRequest,
)

#: Passages a round may carry beyond ``k`` when corrective retrieval adds some.
EXTRA_PASSAGES = 3
_NAME = re.compile(r"\b[A-Z][\w'\u2019-]+(?:\s+(?:of|the|de|von|van|and|&)?\s*[A-Z][\w'-]+)*")
_WORD = re.compile(r"[A-Za-z0-9][\w'-]*")
_STOP = frozenset(
    {
        *("a", "an", "the", "of", "in", "on", "at", "to", "for", "from", "by", "with", "and"),
        *("or", "is", "are", "was", "were", "be", "been", "who", "whom", "whose", "what"),
        *("which", "when", "where", "why", "how", "did", "does", "do", "many", "much", "there"),
        *("this", "that", "these", "those", "it", "its", "as", "into", "about", "than", "then"),
        *("also", "has", "have", "had", "can", "could", "would", "should", "will", "he", "she"),
        *("they", "his", "her", "their", "them", "after", "before", "during", "while", "since"),
        *("until", "later", "both", "first", "one"),
    }
)


class Team(Protocol):
    """The three steps the loop needs; each may raise to end the question."""

    async def search(self, request: SearchRequest) -> list[Passage]: ...

    async def write(self, request: WriteRequest, round_number: int) -> Draft: ...

    async def critique(self, request: CritiqueRequest) -> Critique: ...


@dataclass(frozen=True)
class Retrieved:
    round: int
    query: str
    hop: str
    passages: list[Passage]
    new: int
    ms: float


@dataclass(frozen=True)
class Drafted:
    round: int
    draft: Draft
    mode: str
    ms: float


@dataclass(frozen=True)
class Critiqued:
    round: int
    critique: Critique
    ms: float


@dataclass(frozen=True)
class Done:
    draft: Draft
    critique: Critique | None
    passages: list[Passage]
    rounds: int
    empty_store: bool = False
    history: list[RoundRecord] = field(default_factory=list)


RoundEvent = Retrieved | Drafted | Critiqued | Done


async def answer_rounds(request: AnswerRequest, team: Team) -> AsyncIterator[RoundEvent]:
    """Answer ``request`` with ``team``, yielding each step as it happens."""
    question = request.question.strip()
    passages: list[Passage] = []
    tried: list[str] = []
    history: list[RoundRecord] = []
    query, hop = question, "question"
    draft: Draft | None = None
    critique: Critique | None = None
    for round_number in range(1, request.max_rounds + 1):  # the loop's only hard stop
        if query not in tried:
            tried.append(query)
            started = time.perf_counter()
            found = await team.search(_search(request, query))
            before = {p.chunk_id for p in passages}
            passages = _merge(passages, found, limit=request.k + EXTRA_PASSAGES)
            new = sum(1 for p in passages if p.chunk_id not in before)
            yield Retrieved(round_number, query, hop, list(passages), new, _ms(started))
            if not passages:
                empty = Draft(text="", abstained=True)
                yield Done(empty, None, [], round_number, empty_store=True, history=history)
                return
        started = time.perf_counter()
        draft = await team.write(
            WriteRequest(
                question=question,
                passages=passages,
                previous=draft,
                critique=critique,
                max_tokens=request.max_tokens,
            ),
            round_number,
        )
        yield Drafted(round_number, draft, "generate", _ms(started))
        started = time.perf_counter()
        critique = await team.critique(
            CritiqueRequest(question=question, draft=draft, passages=passages)
        )
        yield Critiqued(round_number, critique, _ms(started))
        history.append(
            RoundRecord(
                round=round_number,
                query=query,
                passages=len(passages),
                draft=draft,
                critique=critique,
            )
        )
        if critique.verdict == "accept":
            yield Done(draft, critique, passages, round_number, history=history)
            return
        query, hop = next_query(question, critique, passages, tried)
    # Out of rounds: quote the passages, or say they do not hold the answer.
    assert critique is not None
    mode: Literal["extractive", "abstain"] = (
        "extractive" if critique.coverage.covered else "abstain"
    )
    started = time.perf_counter()
    fallback = await team.write(
        WriteRequest(question=question, passages=passages, mode=mode),
        request.max_rounds + 1,
    )
    yield Drafted(request.max_rounds, fallback, mode, _ms(started))
    started = time.perf_counter()
    final = await team.critique(
        CritiqueRequest(question=question, draft=fallback, passages=passages)
    )
    yield Critiqued(request.max_rounds, final, _ms(started))
    yield Done(fallback, final, passages, request.max_rounds, history=history)


def next_query(
    question: str, critique: Critique, passages: Sequence[Passage], tried: Sequence[str]
) -> tuple[str, str]:
    """The next round's query: rewritten around missing terms, or a second hop."""
    terms = content_words(question)
    missing = [t for t in critique.coverage.missing_terms if t]
    if missing:
        rewritten = " ".join(dict.fromkeys([*missing, *terms]))
        if rewritten not in tried:
            return rewritten, "rewrite"
    for name in names_in(passages[:2], exclude=question):
        hop = f"{name} {' '.join(terms)}".strip()
        if hop not in tried:
            return hop, "second-hop"
    return (tried[-1] if tried else question), "none"


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry meaning (no function words), in order, once each."""
    words = [w for w in _WORD.findall(text) if w.lower() not in _STOP]
    return list(dict.fromkeys(words))


def names_in(passages: Sequence[Passage], *, exclude: str) -> list[str]:
    """Proper names the passages mention that the question does not, most frequent first."""
    known = {w.lower() for w in _WORD.findall(exclude)}
    counts: dict[str, int] = {}
    for passage in passages:
        for match in _NAME.finditer(passage.text):
            name = match.group(0).strip()
            words = {w.lower() for w in _WORD.findall(name)}
            if not words or words <= known or name.lower() in _STOP or len(name) < 3:
                continue
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda n: (-counts[n], n))[:3]


def _search(request: AnswerRequest, query: str) -> SearchRequest:
    return SearchRequest(
        query=query[:4096],
        k=request.k,
        filters=request.filters,
        collection=request.collection,
    )


def _merge(old: list[Passage], new: list[Passage], *, limit: int) -> list[Passage]:
    """Keep what earlier rounds found (their numbers stay stable), add new passages after."""
    seen = {p.chunk_id for p in old}
    merged = list(old)
    for passage in new:
        if passage.chunk_id not in seen and len(merged) < limit:
            merged.append(passage)
            seen.add(passage.chunk_id)
    return merged


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
