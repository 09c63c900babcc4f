"""The evaluation dev set, checked against the installed Wikipedia corpus.

Every gold article exists, every accepted answer is in a gold article, the kinds have the
counts the evaluation needs, and the corpora built from the set (demo, evaluation) hold
the articles their questions need.
"""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources

import pytest

from scriptorium.corpora import (
    DEMO_KEYS,
    DEMO_NEEDED,
    DEMO_QUESTIONS,
    CorpusMissing,
    demo_documents,
    eval_documents,
    topic_words,
    wiki_by_id,
    wiki_id,
)
from scriptorium.evaluation import DevQuestion, answer_matches, load_devset
from scriptorium.evaluation.devset import DEVSET_FILE, normalise

try:
    CORPUS = {doc_id: doc.text for doc_id, doc in wiki_by_id().items()}
except CorpusMissing:  # pragma: no cover - the retrieval extra is not installed
    pytest.skip("the Wikipedia corpus (retrieval extra) is not installed", allow_module_level=True)

DEVSET = load_devset()


def flat(text: str) -> str:
    """Lower case, every run of (Unicode) white space one space, word joiners gone."""
    return " ".join(text.replace("\u2060", "").split()).lower()


def by_kind(kind: str) -> list[DevQuestion]:
    return [q for q in DEVSET if q.kind == kind]


def test_the_dev_set_has_the_counts_the_evaluation_needs() -> None:
    counts = Counter(q.kind for q in DEVSET)
    assert len(DEVSET) >= 66
    assert counts["two_doc"] >= 22
    assert counts["two_doc"] * 3 >= len(DEVSET) * 0.9  # about a third or more
    assert counts["unanswerable"] >= 8
    assert counts["single"] >= 30


def test_ids_are_unique_and_no_question_is_asked_twice() -> None:
    ids = [q.id for q in DEVSET]
    assert len(ids) == len(set(ids))
    questions = [" ".join(normalise(q.question)) for q in DEVSET]
    assert len(questions) == len(set(questions))


def test_gold_and_related_articles_exist_in_the_corpus() -> None:
    missing = [
        (q.id, doc_id)
        for q in DEVSET
        for doc_id in [*q.gold_documents, *q.related_documents]
        if doc_id not in CORPUS
    ]
    assert missing == []


def test_gold_counts_follow_the_kind() -> None:
    for q in by_kind("single"):
        assert len(q.gold_documents) == 1, q.id
    for q in by_kind("two_doc"):
        assert len(set(q.gold_documents)) == 2 == len(q.gold_documents), q.id
    for q in by_kind("unanswerable"):
        assert q.gold_documents == [], q.id
        assert q.answers == [], q.id
        assert q.related_documents, f"{q.id}: an unanswerable question names related articles"


def test_every_answer_is_in_a_gold_article() -> None:
    absent = [
        (q.id, answer)
        for q in DEVSET
        for answer in q.answers
        if not any(flat(answer) in flat(CORPUS[doc_id]) for doc_id in q.gold_documents)
    ]
    assert absent == []


def test_the_gold_text_matches_the_answers() -> None:
    for q in DEVSET:
        if q.answers:
            assert answer_matches(" ".join(CORPUS[d] for d in q.gold_documents), q), q.id


def test_answers_are_short_and_the_file_holds_no_passage_text() -> None:
    for q in DEVSET:
        for answer in q.answers:
            assert 0 < len(answer.split()) <= 6, (q.id, answer)
    raw = resources.files("scriptorium.evaluation").joinpath(DEVSET_FILE).read_text("utf-8")
    words = re.findall(r"\w+", raw.lower())
    shingles = {" ".join(words[i : i + 8]) for i in range(len(words) - 7)}
    for doc_id in {d for q in DEVSET for d in [*q.gold_documents, *q.related_documents]}:
        text_words = re.findall(r"\w+", CORPUS[doc_id].lower())
        copied = [
            " ".join(text_words[i : i + 8])
            for i in range(len(text_words) - 7)
            if " ".join(text_words[i : i + 8]) in shingles
        ]
        assert copied == [], (doc_id, copied[:3])


def test_the_model_refuses_inconsistent_questions() -> None:
    with pytest.raises(ValueError, match="distinct gold documents"):
        DevQuestion(id="x", question="?", kind="two_doc", gold_documents=["wiki/A"], answers=["a"])
    with pytest.raises(ValueError, match="no answers"):
        DevQuestion(id="x", question="?", kind="single", gold_documents=["wiki/A"])
    with pytest.raises(ValueError, match="distinct gold documents"):
        DevQuestion(id="x", question="?", kind="unanswerable", gold_documents=["wiki/A"])


def question(*answers: str) -> DevQuestion:
    return DevQuestion(
        id="t", question="?", kind="single", gold_documents=["wiki/X"], answers=list(answers)
    )


@pytest.mark.parametrize(
    ("text", "answers", "expected"),
    [
        ("Edison registered 1093 patents.", ("1,093",), True),
        ("He held 1,093 US patents [2].", ("1093",), True),
        ("It was sealed at RUNNYMEDE, near Windsor.", ("Runnymede",), True),
        ("born in Konigsberg", ("Königsberg",), True),
        ("The family won 5 Nobel Prizes.", ("five",), True),
        ("It was founded in 1970.", ("1970",), True),
        ("It was founded in the 1970s.", ("1970",), False),  # whole tokens only
        ("See [2] and [3].", ("2",), False),  # a citation marker is not an answer
        ("The abbey of St Thomas", ("St. Thomas' Abbey", "St. Thomas"), True),
        ("Nothing relevant here.", ("Prague",), False),
        ("About 35 percent live there.", ("35%",), True),
    ],
)
def test_answer_matches(text: str, answers: tuple[str, ...], expected: bool) -> None:
    assert answer_matches(text, question(*answers)) is expected


def test_an_unanswerable_question_matches_nothing() -> None:
    q = next(iter(by_kind("unanswerable")))
    assert not answer_matches("anything at all", q)


def test_the_demo_corpus_holds_what_the_demo_questions_need() -> None:
    docs = demo_documents()
    ids = {d.id for d in docs}
    assert 30 <= len(docs) <= 60
    assert len(ids) == len(docs) == len(set(DEMO_KEYS))
    assert {wiki_id(key) for key in DEMO_NEEDED} <= ids
    assert len(DEMO_QUESTIONS) == 2
    sputnik, gagarin, tereshkova = (flat(CORPUS[wiki_id(k)]) for k in DEMO_NEEDED)
    # Question 1: one article.
    assert "4 october 1957" in sputnik
    # Question 2 needs both articles: each holds one of the two durations.
    assert "108 minutes" in gagarin
    assert "three days" in tereshkova
    assert "tereshkova" not in gagarin
    assert "gagarin" not in tereshkova


def test_eval_documents_are_deterministic_and_hold_every_gold_article() -> None:
    docs = eval_documents(DEVSET, distractors=120, seed=7)
    ids = [d.id for d in docs]
    assert ids == [d.id for d in eval_documents(DEVSET, distractors=120, seed=7)]
    assert ids != [d.id for d in eval_documents(DEVSET, distractors=120, seed=8)]
    needed = {d for q in DEVSET for d in [*q.gold_documents, *q.related_documents]}
    assert needed <= set(ids)
    assert len(ids) == len(set(ids)) == len(needed) + 120
    assert [d.id for d in eval_documents(DEVSET, distractors=0)] == sorted(needed)


def test_eval_documents_include_topically_near_distractors() -> None:
    by_id = wiki_by_id()
    needed = {d for q in DEVSET for d in [*q.gold_documents, *q.related_documents]}
    topics = set().union(*(topic_words(by_id[d]) for d in needed))
    distractors = [d for d in eval_documents(DEVSET) if d.id not in needed]
    assert len(distractors) == 300
    near = [d for d in distractors if topic_words(d) & topics]
    assert len(near) >= 150  # half are chosen near, and some random ones happen to be
