"""The evaluation's scoring, on hand-built answers; one short run through the session's stack.

The metric functions read :class:`~protocol.payloads.Answer` objects, so each test builds
answers whose figures are known by hand: two citations out of three point at the gold
article, one sentence of two is cited by it, one rejected sentence is left unmarked, and so on.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from typer.testing import CliRunner

from protocol.payloads import (
    Answer,
    AnswerCitation,
    AnswerSentence,
    Coverage,
    Critique,
    Draft,
    DraftSentence,
    Passage,
    RoundRecord,
    SentenceVerdict,
)
from scriptorium.bench import BENCHMARKS
from scriptorium.evaluation import DevQuestion, load_devset
from scriptorium.evaluation.probes import ERROR_TYPES, Probe, critic_metrics, critic_probes
from scriptorium.evaluation.report import Outcome, report
from scriptorium.evaluation.run import EvalOptions, evaluate, select
from scriptorium.evaluation.scoring import (
    answer_metrics,
    final_view,
    percentile,
    retrieval_metrics,
    round_view,
)

GOLD = "wiki/Smallpox"
SINGLE = DevQuestion(
    id="s-smallpox",
    question="In what year did the WHO declare smallpox wiped out worldwide?",
    kind="single",
    gold_documents=[GOLD],
    answers=["1980"],
)
TWO_DOC = DevQuestion(
    id="t-pair",
    question="Which came first, A or B?",
    kind="two_doc",
    gold_documents=["wiki/A", "wiki/B"],
    answers=["A"],
)
UNANSWERABLE = DevQuestion(
    id="u-nothing",
    question="What colour was the first smallpox vaccine vial?",
    kind="unanswerable",
    related_documents=[GOLD],
)
SMALLPOX = (
    "Smallpox was an infectious disease caused by variola virus. The last naturally occurring "
    "case was diagnosed in October 1977, and the World Health Organization certified the "
    "global eradication of the disease in 1980."
)
OTHER = (
    "Edward Jenner was an English physician who pioneered the concept of vaccines. He was "
    "born in Berkeley, Gloucestershire, in 1749 and worked as a country doctor."
)


def passage(document_id: str, text: str = "text", n: int = 0) -> Passage:
    return Passage(
        chunk_id=f"{document_id}#{n}",
        document_id=document_id,
        source=f"wikipedia:{document_id.removeprefix('wiki/')}",
        text=text,
        score=1.0,
    )


def sentence(
    text: str, cites: list[tuple[int, str]], verdict: str = "supported", marked: bool = False
) -> AnswerSentence:
    return AnswerSentence(
        text=text,
        citations=[
            AnswerCitation(
                passage=n,
                chunk_id=f"{doc}#0",
                document_id=doc,
                source=doc,
                snippet="",
                support=0.9,
                origin="model",
            )
            for n, doc in cites
        ],
        verdict=verdict,  # type: ignore[arg-type]
        support=0.9,
        unsupported=marked,
    )


def critique(verdicts: list[str], verdict: str = "revise") -> Critique:
    return Critique(
        verdict=verdict,  # type: ignore[arg-type]
        sentences=[
            SentenceVerdict(index=i, sentence="", citations=[], verdict=v, support=0.5)  # type: ignore[arg-type]
            for i, v in enumerate(verdicts)
        ],
        coverage=Coverage(covered=True),
    )


def answer(
    question: DevQuestion,
    text: str,
    sentences: list[AnswerSentence],
    passages: list[Passage],
    **fields: Any,
) -> Answer:
    values: dict[str, Any] = {
        "question": question.question,
        "text": text,
        "sentences": sentences,
        "passages": passages,
        "verdict": "accept",
        "rounds": 1,
        "session_id": "s",
        **fields,
    }
    return Answer(**values)


def test_citation_precision_counts_citations_and_recall_counts_sentences() -> None:
    # Sentence 1 cites the gold article and a distractor; sentence 2 only the distractor.
    passages = [passage(GOLD), passage("wiki/Edward Jenner")]
    result = answer(
        SINGLE,
        "Smallpox was declared eradicated in 1980 [1][2]. Jenner made a vaccine [2].",
        [
            sentence("Smallpox was declared eradicated in 1980.", [(1, GOLD), (2, "wiki/E")]),
            sentence("Jenner made a vaccine.", [(2, "wiki/E")]),
        ],
        passages,
    )
    metrics = answer_metrics([(SINGLE, final_view(result))])
    assert metrics["citation_precision"] == pytest.approx(1 / 3, abs=1e-4)  # 1 of 3 citations
    assert metrics["citation_recall"] == 0.5  # 1 of 2 sentences
    assert metrics["answer_contains_gold"] == 1.0
    assert metrics["answer_contains_gold_by_kind"] == {"single": 1.0, "two_doc": None}


def test_precision_and_recall_pool_every_answerable_question_and_skip_unanswerable() -> None:
    two_doc = answer(
        TWO_DOC,
        "A came first [1]. B came second [2].",
        [sentence("A came first.", [(1, "wiki/A")]), sentence("B came second.", [(2, "wiki/B")])],
        [passage("wiki/A"), passage("wiki/B")],
    )
    single = answer(
        SINGLE,
        "It ended in 1979 [1].",
        [sentence("It ended in 1979.", [(1, "wiki/X")])],
        [passage("wiki/X")],
    )
    # An unanswerable question's citations judge nothing: it has no gold documents.
    unanswerable = answer(
        UNANSWERABLE,
        "Blue [1].",
        [sentence("Blue.", [(1, "wiki/X")])],
        [passage("wiki/X")],
    )
    metrics = answer_metrics(
        [
            (TWO_DOC, final_view(two_doc)),
            (SINGLE, final_view(single)),
            (UNANSWERABLE, final_view(unanswerable)),
        ]
    )
    assert metrics["citation_precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["citation_recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["answer_contains_gold"] == 0.5  # "1979" is not 1980; "A" is there
    assert metrics["abstained_on_unanswerable"] == 0.0
    assert metrics["citations"] == 3


def test_unmarked_unsupported_counts_rejected_sentences_shown_without_a_mark() -> None:
    result = answer(
        SINGLE,
        "...",
        [
            sentence("Fine.", [(1, GOLD)]),
            sentence("Rejected but marked.", [(1, GOLD)], verdict="unsupported", marked=True),
            sentence("Bad citation, unmarked.", [(1, GOLD)], verdict="bad_citation"),
            sentence("Uncited, unmarked.", [], verdict="uncited"),
        ],
        [passage(GOLD)],
    )
    metrics = answer_metrics([(SINGLE, final_view(result))])
    assert metrics["unmarked_unsupported_sentences"] == 2
    assert metrics["supported_sentence_rate"] == 0.25


def test_an_abstention_never_contains_the_answer_and_counts_as_abstaining() -> None:
    # The abstention names its closest passages; a source could spell the answer.
    abstained = answer(
        SINGLE,
        "The documents do not say. The closest passages: [1] wikipedia:1980.",
        [],
        [passage(GOLD)],
        abstained=True,
    )
    declined = answer(
        UNANSWERABLE, "The documents do not say.", [], [passage(GOLD)], abstained=True
    )
    metrics = answer_metrics(
        [(SINGLE, final_view(abstained)), (UNANSWERABLE, final_view(declined))]
    )
    assert metrics["answer_contains_gold"] == 0.0
    assert metrics["false_abstention_rate"] == 1.0
    assert metrics["abstained_on_unanswerable"] == 1.0
    assert metrics["citation_precision"] is None  # no citations: nothing to divide


def draft(text: str, cites: list[int], **fields: Any) -> Draft:
    return Draft(text=text, sentences=[DraftSentence(text=text, citations=cites)], **fields)


def test_round_views_follow_the_history_and_an_accepted_draft_is_kept() -> None:
    passages = [passage("wiki/X"), passage(GOLD)]  # round 2 added the gold passage
    history = [
        RoundRecord(
            round=1,
            query="q",
            passages=1,
            draft=draft("It was 1979 [1].", [1]),
            critique=critique(["unsupported"]),
        ),
        RoundRecord(
            round=2,
            query="smallpox 1980",
            passages=2,
            draft=draft("It was 1980 [2].", [2]),
            critique=critique(["supported"], verdict="accept"),
        ),
    ]
    final = answer(
        SINGLE,
        "It was 1980 [2].",
        [sentence("It was 1980.", [(2, GOLD)])],
        passages,
        history=history,
        rounds=2,
    )
    first = answer_metrics([(SINGLE, round_view(final, 1))])
    assert first["answer_contains_gold"] == 0.0
    assert first["citation_precision"] == 0.0
    assert first["accepted_rate"] == 0.0
    assert first["unmarked_unsupported_sentences"] == 1  # a draft marks nothing itself
    for later in (2, 3):
        view = round_view(final, later)
        assert view.accepted
        assert answer_metrics([(SINGLE, view)])["citation_precision"] == 1.0
    # Round 1 retrieved one passage: retrieval is judged on it alone.
    assert retrieval_metrics([(SINGLE, final)])["retrieval_hit_at_5"] == 0.0


def test_retrieval_all_gold_needs_both_articles_of_a_two_doc_question() -> None:
    both = answer(TWO_DOC, "", [], [passage("wiki/A"), passage("wiki/B")])
    one = answer(TWO_DOC, "", [], [passage("wiki/A"), passage("wiki/C")])
    metrics = retrieval_metrics([(TWO_DOC, both), (TWO_DOC, one)])
    assert metrics["retrieval_hit_at_5"] == 1.0
    assert metrics["retrieval_all_gold_at_5"] == 0.5
    sixth = answer(SINGLE, "", [], [*(passage(f"wiki/{i}") for i in range(5)), passage(GOLD)])
    assert retrieval_metrics([(SINGLE, sixth)])["retrieval_hit_at_5"] == 0.0


def test_critic_probes_plant_errors_with_the_training_generators() -> None:
    result = answer(SINGLE, "", [], [passage("wiki/Edward Jenner", OTHER), passage(GOLD, SMALLPOX)])
    probes = critic_probes(result, SINGLE)
    kinds = {p.kind: p for p in probes}
    true = kinds["true"]
    assert "1980" in true.claim
    assert true.cited == 2
    assert kinds["wrong_citation"].claim == true.claim
    assert kinds["wrong_citation"].cited == 1
    numbers = re.compile(r"\d+")
    assert numbers.findall(kinds["swapped_number"].claim) != numbers.findall(true.claim)
    assert "not" in kinds["negated"].claim.split() or "never" in kinds["negated"].claim.split()
    assert kinds["other_passage"].claim in OTHER
    for kind in ERROR_TYPES:
        if kind in kinds and kind != "wrong_citation":
            assert kinds[kind].claim != true.claim
            assert kinds[kind].cited == 2
    assert critic_probes(result, SINGLE) == probes  # seeded: the same probes every run
    # No gold passage among the answer's passages: nothing to probe.
    assert critic_probes(answer(SINGLE, "", [], [passage("wiki/X", OTHER)]), SINGLE) == []


def test_critic_metrics_count_revise_or_a_rejected_sentence_as_flagged() -> None:
    probe = Probe(SINGLE, "negated", "claim", 1, ())
    true = Probe(SINGLE, "true", "claim", 1, ())
    results = [
        (probe, critique(["unsupported"])),
        (probe, critique(["supported"], verdict="accept")),
        (probe, critique(["supported"], verdict="revise")),  # revised for coverage
        (true, critique(["supported"], verdict="accept")),
        (true, None),  # a failed call: counted, not judged
    ]
    metrics = critic_metrics(results)
    assert metrics["critic_recall_planted"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["critic_sentence_level"]["recall_planted"] == pytest.approx(1 / 3, abs=1e-4)
    assert metrics["critic_recall_planted_by_type"]["negated"] == {"recall": 0.6667, "n": 3}
    assert metrics["critic_false_reject_rate"] == 0.0
    assert metrics["critic_errors"] == 1


def test_report_counts_failed_questions_instead_of_dropping_them() -> None:
    ok = answer(SINGLE, "1980 [1].", [sentence("1980.", [(1, GOLD)])], [passage(GOLD)])
    outcomes = [
        Outcome(SINGLE, answer=ok, seconds=2.0),
        Outcome(TWO_DOC, error="SkillFailed: the writer failed", seconds=1.0),
    ]
    result = report(outcomes, [], rounds=2)
    assert result["questions"] == 2
    assert result["answered"] == 1
    assert result["errors"] == 1
    assert result["error_details"] == [{"id": "t-pair", "error": "SkillFailed: the writer failed"}]
    assert set(result["per_round"]) == {"1", "2", "final"}
    assert result["latency_p50_s"] == 2.0


def test_select_keeps_the_kinds_in_proportion() -> None:
    devset = load_devset()
    chosen = select(devset, 30)
    kinds = {k: sum(q.kind == k for q in chosen) for k in ("single", "two_doc", "unanswerable")}
    share = {k: sum(q.kind == k for q in devset) / len(devset) * 30 for k in kinds}
    assert all(abs(kinds[k] - share[k]) <= 1 for k in kinds), (kinds, share)
    assert select(devset, None) == devset


def test_batches_stay_under_the_size_limit_as_sent_on_the_wire() -> None:
    from protocol.payloads import Document
    from scriptorium.inline import ENVELOPE_BYTES, document_batches, wire_size

    docs = [Document(id=f"d{i}", text="é" * 1000, source=f"s{i}") for i in range(50)]
    batches = list(document_batches(docs, max_bytes=ENVELOPE_BYTES + 10_000))
    assert sum(len(b) for b in batches) == 50
    assert len(batches) > 1
    assert all(sum(wire_size(d) for d in b) <= 10_000 for b in batches)
    with pytest.raises(ValueError, match="more than one request may carry"):
        list(document_batches(docs, max_bytes=ENVELOPE_BYTES + 100))


def test_percentile_interpolates() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert percentile([], 50) is None


def test_bench_e2e_is_listed() -> None:
    assert "e2e" in BENCHMARKS


def test_eval_refuses_structured_on_a_stack_it_did_not_start() -> None:
    from scriptorium.cli import app

    result = CliRunner().invoke(
        app, ["eval", "--structured", "--registry-url", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 2
    assert "stack of its own" in result.output


@pytest.mark.slow
async def test_a_short_run_through_the_session_stack(stack: Any) -> None:
    result = await evaluate(
        EvalOptions(limit=3, rounds=1, concurrency=3, registry_url=stack.registry_url),
        progress=lambda line: None,
    )
    assert result["questions"] == 3
    assert result["errors"] == 0, result["error_details"]
    assert result["unmarked_unsupported_sentences"] == 0
    assert set(result["per_round"]) == {"1", "final"}
    assert result["critic_probes"] + result["critic_errors"] > 0
    assert result["ingest"]["ingested"] + result["ingest"]["unchanged"] > 400
