"""The grounding model on the real embedder: support, coverage, extraction, the labelled set."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from agents.common.embedding import Vectors
from agents.common.grounding.features import FEATURES
from agents.common.grounding.grounder import Grounder
from agents.common.grounding.model import GroundingModelMissing, model_dir
from agents.common.settings import EmbeddingSettings
from agents.critic.training.corpus import Document
from agents.critic.training.errors import NEGATIVE_KINDS
from agents.critic.training.examples import digest, generate_examples
from agents.critic.training.rewrites import POSITIVE_KINDS
from agents.critic.training.train import train
from protocol.text import split_sentences

RHINE = (
    "The Rhine rises in the Swiss Alps and flows north for about 1,230 kilometres before it "
    "reaches the North Sea in the Netherlands. Basel, Cologne and Rotterdam are among the "
    "cities on its banks."
)
SOURDOUGH = (
    "Sourdough bread is leavened by a culture of wild yeast and lactic acid bacteria rather "
    "than by baker's yeast. The bacteria give the bread its slightly sour taste. A starter "
    "must be fed with flour and water regularly to stay active."
)
EVEREST = (
    "Mount Everest is the highest mountain on Earth above sea level. It stands on the border "
    "between Nepal and China, in the Mahalangur range of the Himalayas. Its summit is 8,849 "
    "metres high, a figure measured in 2020."
)
PASSAGES = [RHINE, SOURDOUGH, EVEREST]


@pytest.fixture(scope="module")
def settings() -> EmbeddingSettings:
    return EmbeddingSettings()


@pytest.fixture(scope="module")
def grounder(settings: EmbeddingSettings) -> Grounder:
    train(settings)  # idempotent: `make model` trained it already (else ~1 min, once)
    return Grounder.load(settings)


def score(grounder: Grounder, sentence: str, passage: str) -> float:
    (row,) = grounder.support([sentence], [passage])
    return row[0].score


@pytest.mark.parametrize(
    ("sentence", "passage"),
    [
        ("The Rhine flows into the North Sea in the Netherlands.", RHINE),
        ("Sourdough is leavened by wild yeast and lactic acid bacteria.", SOURDOUGH),
        ("According to the passage, Everest's summit is 8,849 metres high.", EVEREST),
    ],
)
def test_a_faithful_rewording_is_supported(grounder: Grounder, sentence: str, passage: str) -> None:
    assert score(grounder, sentence, passage) >= grounder.threshold


@pytest.mark.parametrize(
    ("sentence", "passage"),
    [
        ("The Rhine flows north for about 2,230 kilometres.", RHINE),  # swapped number
        ("Sourdough bread is not leavened by wild yeast.", SOURDOUGH),  # negated
        ("The Rhine rises in the Austrian Alps and flows north.", RHINE),  # swapped name
        ("Mount Everest was first climbed in 1953 by Edmund Hillary.", EVEREST),  # not there
    ],
)
def test_planted_errors_are_not_supported(grounder: Grounder, sentence: str, passage: str) -> None:
    assert score(grounder, sentence, passage) < grounder.threshold


def test_support_gives_one_row_per_sentence_and_picks_the_right_passage(
    grounder: Grounder,
) -> None:
    sentences = [
        "Basel and Cologne are cities on the Rhine [3].",  # citation markers are ignored
        "A sourdough starter has to be fed with flour and water.",
        "Everest stands on the border between Nepal and China.",
    ]
    rows = grounder.support(sentences, PASSAGES, "Where does the Rhine rise?")
    assert len(rows) == len(sentences)
    for expected, row in enumerate(rows):
        assert [s.passage for s in row] == [0, 1, 2]
        best = max(row, key=lambda s: s.score)
        assert best.passage == expected
        assert best.score >= grounder.threshold
        assert best.span in split_sentences(PASSAGES[expected])
        assert set(best.features) == set(FEATURES)
        assert all(0.0 <= s.score <= 1.0 for s in row)


def test_empty_inputs(grounder: Grounder) -> None:
    assert grounder.support([], PASSAGES) == []
    assert grounder.support(["Anything at all."], []) == [[]]
    (row,) = grounder.support(["Anything at all."], [RHINE, "  "])
    assert row[1].score == 0.0


def test_coverage_flags_what_no_passage_mentions(grounder: Grounder) -> None:
    present = grounder.coverage("How long is the Rhine?", PASSAGES)
    assert present.covered
    assert present.answer_type == "number"
    assert present.answer_type_found
    absent = grounder.coverage("Who designed the Eiffel Tower?", PASSAGES)
    assert not absent.covered
    assert {"eiffel", "tower"} <= set(absent.missing_terms)
    assert absent.answer_type == "person"


def test_coverage_wants_the_answer_type_in_a_relevant_passage(grounder: Grounder) -> None:
    report = grounder.coverage("In what year did the Rhine change course?", [RHINE])
    assert report.answer_type == "date"
    assert not report.answer_type_found  # 1,230 is a length, not a year
    assert not report.covered


def test_extract_returns_sentences_of_the_relevant_passage(grounder: Grounder) -> None:
    best = grounder.extract("How high is the summit of Mount Everest?", PASSAGES, limit=2)
    assert len(best) == 2
    assert all(index == 2 for index, _, _ in best)
    assert any("8,849" in sentence for _, sentence, _ in best)
    assert best[0][2] >= best[1][2]


def _documents() -> list[Document]:
    texts = {
        "rhine": RHINE,
        "sourdough": SOURDOUGH,
        "everest": EVEREST,
        "kiln": "A kiln is a thermally insulated chamber used to harden clay. Potters in Japan "
        "fire stoneware at about 1,300 degrees. Wood-fired kilns were common before 1900.",
        "violin": "The violin has four strings tuned in perfect fifths. Antonio Stradivari "
        "built about 1,100 instruments in Cremona. Fewer than 650 of them survive today.",
        "harbour": "Hamburg's harbour lies on the Elbe, about 110 kilometres from the sea. It "
        "was founded in 1189 and is not the largest port in Europe.",
    }
    return [
        Document(key, key.title(), text, tuple(split_sentences(text)))
        for key, text in texts.items()
    ]


def test_the_labelled_set_is_reproducible(grounder: Grounder) -> None:
    def embed(texts: Sequence[str]) -> Vectors:
        found = grounder.featurizer.cache.lookup(texts)
        return np.stack([found[t] for t in texts])

    documents = _documents()
    first = generate_examples(documents, embed, seed=5)
    again = generate_examples(documents, embed, seed=5)
    other = generate_examples(documents, embed, seed=6)
    assert first == again
    assert digest(first) == digest(again) != digest(other)
    assert {e.supported for e in first} == {True, False}
    assert {e.kind for e in first} <= set(POSITIVE_KINDS) | set(NEGATIVE_KINDS)
    assert all(e.kind in POSITIVE_KINDS for e in first if e.supported)
    passages = {d.text for d in documents}
    assert all(e.passage in passages and e.claim for e in first)


def test_training_is_idempotent(settings: EmbeddingSettings, grounder: Grounder) -> None:
    started = time.perf_counter()
    report = train(settings)
    assert report.cached
    assert time.perf_counter() - started < 5
    assert report.path == model_dir(settings.resolved_model_cache_dir)
    assert report.threshold == pytest.approx(grounder.threshold)
    assert set(report.importances) == set(FEATURES)
    assert 0.0 < report.metrics["f1"] <= 1.0


def test_a_missing_model_says_how_to_train_it(tmp_path: Path) -> None:
    with pytest.raises(GroundingModelMissing, match="scriptorium critic train"):
        Grounder.load(EmbeddingSettings(model_cache_dir=tmp_path))
