"""Property tests (Hypothesis) for what every request passes through: the payload models,
the chunker and the citation parser. Inputs are generated, not picked: each property must
hold for any text or JSON, and Hypothesis shrinks a failure to its smallest example."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from pydantic import ValidationError

import protocol.payloads as payloads
from agents.retriever.chunking import WORD, ChunkingConfig, chunk_text
from protocol.text import parse_answer, parse_citations, render_answer, render_sentence

MODELS = sorted(
    (
        model
        for model in vars(payloads).values()
        if inspect.isclass(model) and issubclass(model, payloads.Payload)
    ),
    key=lambda model: model.__name__,
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
WORDS = st.sampled_from(
    ["orbit", "rocket", "Sputnik", "launched", "satellite", "telescope", "mission", "crew"]
)


def test_fuzz_every_payload_model_is_covered() -> None:
    assert len(MODELS) >= 20, [m.__name__ for m in MODELS]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FAST
@given(data=st.data())
def test_fuzz_payloads_accept_what_their_schema_allows_and_round_trip(
    model: type[payloads.Payload], data: st.DataObject
) -> None:
    document = data.draw(from_schema(model.model_json_schema()))
    parsed = model.model_validate(document)
    again = model.model_validate_json(parsed.model_dump_json())
    assert again == parsed


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FAST
@given(document=JSON)
def test_fuzz_payloads_reject_arbitrary_json_only_with_a_validation_error(
    model: type[payloads.Payload], document: Any
) -> None:
    try:
        model.model_validate(document)
    except ValidationError as exc:
        json.dumps(exc.errors(include_url=False), default=str)  # the error can be reported


@FAST
@given(text=st.text(max_size=3000), target=st.integers(5, 120), longest=st.integers(5, 200))
def test_fuzz_chunks_cover_every_word_in_order_and_within_the_size_limit(
    text: str, target: int, longest: int
) -> None:
    config = ChunkingConfig(target_words=target, max_words=longest, overlap_words=target // 4)
    chunks = chunk_text(text, config)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert chunks == chunk_text(text, config), "chunking is deterministic"
    for chunk in chunks:
        assert 0 <= chunk.start < chunk.end <= len(text)
        assert len(WORD.findall(text[chunk.start : chunk.end])) <= max(target, longest)
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    headings = [m.span() for m in re.finditer(r"^#{1,6}[ \t]+.+$", text, re.MULTILINE)]
    covered = [(c.start, c.end) for c in chunks] + headings
    for word in WORD.finditer(text):
        assert any(s <= word.start() and word.end() <= e for s, e in covered), word


@FAST
@given(text=st.text(max_size=400))
def test_fuzz_citation_parser_never_fails_and_leaves_no_marker(text: str) -> None:
    cited = parse_citations(text)
    assert not re.search(r"\[\s*\d{1,3}\s*\]", cited.text)
    assert len(set(cited.citations)) == len(cited.citations)
    assert all(0 <= n <= 999 for n in cited.citations)
    parse_answer(text)


@FAST
@given(
    sentences=st.lists(
        st.tuples(
            st.lists(WORDS, min_size=1, max_size=8),
            st.lists(st.integers(1, 20), max_size=3, unique=True),
            st.booleans(),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_fuzz_rendered_answers_parse_back_to_their_sentences_and_citations(
    sentences: list[tuple[list[str], list[int], bool]],
) -> None:
    rendered = [
        (" ".join(words).capitalize() + ".", cites, mark) for words, cites, mark in sentences
    ]
    parsed = parse_answer(render_answer(rendered))
    assert [(p.text, list(p.citations)) for p in parsed] == [
        (text, cites) for text, cites, _ in rendered
    ]
    for text, cites, mark in rendered:
        assert parse_citations(render_sentence(text, cites, unsupported=mark)).text == text
