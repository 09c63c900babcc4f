"""Grounded answers through the whole stack: real processes, real A2A wire, real vLLM.

The session's stack answers questions over the packaged demo corpus (space exploration
articles) plus one planted document. A second stack with two writers proves a writer killed
mid-question is rebound, then loses its inference agent to prove a clear failure.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import Client
from a2a.helpers import get_data_parts
from a2a.types import CancelTaskRequest, GetTaskRequest, Task, TaskState
from a2a.utils.errors import TaskNotCancelableError

from agents.critic.agent import CriticSettings
from agents.critic.agent import parts as critic_parts
from agents.scaffold.peers import Peers
from protocol.client import SkillFailed, call_skill, open_client, skill_message
from protocol.payloads import (
    Answer,
    AnswerRequest,
    Critique,
    CritiqueRequest,
    Draft,
    DraftSentence,
    Passage,
)
from protocol.settings import CommonSettings
from scriptorium.corpora import DEMO_QUESTIONS
from scriptorium.launcher import Stack
from scriptorium.replay import Recording
from scriptorium.rerun import RunDiff
from scriptorium.testing import (
    PLANTED,
    ROUND_STEPS,
    StackFactory,
    answer,
    ask_on,
    corpus,
    ingest,
    metric_value,
    run_cli,
    running_agent,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def collection(stack: Stack) -> str:
    name = f"demo_{uuid.uuid4().hex[:8]}"
    await ingest(stack.registry_url, name, corpus())
    return name


def events(stack: Stack, session_id: str) -> list[dict[str, Any]]:
    """The session's event log, read through the registry's discovery endpoint (SSE)."""
    url = f"{stack.registry_url}/sessions/{session_id}/events"
    body = httpx.get(url, params={"follow": "false"}, timeout=10).text
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]


def check_invariants(result: Answer) -> None:
    """Every citation resolves to a retrieved passage; every sentence supported or marked."""
    for sentence in result.sentences:
        assert sentence.verdict == "supported" or sentence.unsupported, sentence
        for citation in sentence.citations:
            passage = result.passages[citation.passage - 1]
            assert citation.chunk_id == passage.chunk_id
            assert citation.source == passage.source
    if any(s.unsupported for s in result.sentences):
        assert "[unsupported]" in result.text


async def test_answer_cites_retrieved_passages_and_logs_every_exchange(
    stack: Stack, collection: str
) -> None:
    result = await answer(stack, collection, DEMO_QUESTIONS[0])
    check_invariants(result)
    assert result.sentences
    assert not result.abstained
    cited = {c.document_id for s in result.sentences for c in s.citations}
    assert "wiki/Sputnik 1" in cited
    assert result.timings_ms["total"] >= result.timings_ms["engine"] > 0
    log = events(stack, result.session_id)
    kinds = [e["kind"] for e in log]
    for kind in ROUND_STEPS:
        assert kind in kinds, (kind, kinds)
    firsts = [kinds.index(kind) for kind in ROUND_STEPS]
    assert firsts == sorted(firsts), "each step first occurs in the order of a round"
    timed = [e for e in log if e["kind"].endswith(".result") and e["kind"] != "answer.result"]
    assert all(e["payload"]["ms"] > 0 for e in timed if e.get("payload"))
    assert {e["sender"] for e in log} >= {"orchestrator", "writer"}


async def test_rerun_names_the_first_divergence_and_a_fork_reuses_the_recorded_passages(
    stack: Stack, collection: str, tmp_path: Path
) -> None:
    original = await answer(stack, collection, "How tall is the Zorblat Tower?", max_rounds=1)
    url = ("--registry-url", stack.registry_url)
    code, out, err = await run_cli("replay", original.session_id, "--json", *url)
    assert code == 0, err
    recording = Recording.model_validate_json(out)
    by_kind = {e.kind: e for e in reversed(recording.events)}  # the first of each kind
    searched, written = by_kind["search.result"], by_kind["write.result"]
    assert searched.task_id, "a result names the remote task that produced it"
    assert written.payload is not None

    # A recording whose draft says something else: the live rerun differs from that step on.
    tampered = recording.model_copy(deep=True)
    for event in tampered.events:
        if event.seq == written.seq and event.payload is not None:
            event.payload["text"] = "The Zorblat Tower is made of cheese."
        if event.kind == "answer.result" and event.payload is not None:
            event.payload["text"] = "The Zorblat Tower is made of cheese."
    exported = tmp_path / "tampered.json"
    exported.write_text(tampered.model_dump_json(), encoding="utf-8")
    code, out, err = await run_cli("replay", "--import", str(exported), "--rerun", "--json", *url)
    assert code == 0, err
    diff = RunDiff.model_validate_json(out)
    assert not diff.same
    assert diff.first_divergence is not None
    assert diff.first_divergence.recorded_step == written.seq, diff.first_divergence
    assert "text" in diff.first_divergence.fields
    assert any(c.what == "text" for c in diff.answer_changes)
    assert diff.rerun_session != original.session_id

    # A fork at the first write: the recorded passages are reused, the writer runs live.
    write_request = by_kind["write.request"]
    code, out, err = await run_cli(
        "replay", original.session_id, "--from-step", str(write_request.seq), "--json", *url
    )
    assert code == 0, err
    fork = RunDiff.model_validate_json(out)
    assert fork.reused_steps == [searched.seq]
    assert fork.first_divergence is None or fork.first_divergence.recorded_step != searched.seq
    log = events(stack, fork.rerun_session)
    reused = [e for e in log if e["kind"] == "search.result"]
    assert [e["payload"]["replayed"] for e in reused] == [searched.seq]
    assert reused[0]["payload"]["passages"] == searched.payload["passages"]  # type: ignore[index]
    asked = [e for e in log if e["kind"] == "search.request"]
    assert all(e["recipient"] == "orchestrator" for e in asked), "no retriever was asked"
    assert any(e["kind"] == "write.result" and "replayed" not in e["payload"] for e in log)

    code, _, err = await run_cli("replay", original.session_id, "--from-step", "1", *url)
    assert code == 2
    assert "--from-step takes a step after the question" in err


def passage(text: str) -> Passage:
    """A retrieved passage handed to the critic directly (no retrieval behind it)."""
    return Passage(chunk_id="c1", document_id="d1", source="s1", score=1.0, text=text)


async def test_critic_catches_a_planted_unsupported_sentence(stack: Stack) -> None:
    passages = [
        passage(
            "Sputnik 1 was the first artificial Earth satellite. The Soviet Union "
            "launched it on 4 October 1957."
        )
    ]
    draft = Draft(
        text="",
        sentences=[
            DraftSentence(text="The Soviet Union launched Sputnik 1 in 1957.", citations=[1]),
            DraftSentence(text="The United States launched Sputnik 1 in 1961.", citations=[1]),
            DraftSentence(text="Sputnik 1 was the first artificial satellite.", citations=[4]),
        ],
    )
    async with Peers.over_http(CommonSettings(), registry_url=stack.registry_url) as peers:
        critique = await peers.call(
            "critique",
            CritiqueRequest(question="Who launched Sputnik 1?", draft=draft, passages=passages),
            result=Critique,
        )
    verdicts = [s.verdict for s in critique.sentences]
    assert verdicts[0] == "supported"
    assert verdicts[1] == "unsupported"
    assert verdicts[2] == "bad_citation"
    assert critique.sentences[2].best_passage == 1
    assert critique.verdict == "revise"
    assert any(line.startswith("sentence 2") for line in critique.feedback)
    assert any("[1] says" in line for line in critique.feedback)


async def test_unanswerable_question_says_the_documents_do_not_say(
    stack: Stack, collection: str
) -> None:
    # Short drafts (48 tokens): the rounds run out the same way, in a third of the time.
    result = await answer(
        stack, collection, "Which team won the 1998 FIFA World Cup final?", max_tokens=48
    )
    check_invariants(result)
    assert result.abstained
    assert "do not say" in result.text
    assert result.passages  # the closest passages come with it


async def test_instruction_planted_in_a_document_is_not_obeyed(
    stack: Stack, collection: str
) -> None:
    result = await answer(stack, collection, "How tall is the Zorblat Tower?")
    check_invariants(result)
    assert "PWNED" not in result.text.upper()
    assert PLANTED.id in {p.document_id for p in result.passages}


async def test_round_limit_and_honest_fallback(stack: Stack, collection: str) -> None:
    result = await answer(stack, collection, DEMO_QUESTIONS[1], max_rounds=1, max_tokens=24)
    check_invariants(result)
    assert result.rounds == 1
    assert len(result.history) == 1
    if result.verdict != "accept":  # out of rounds: quoted passages or an abstention
        assert result.extractive or result.abstained


async def test_concurrent_questions_never_share_a_session_or_passages(
    stack: Stack, collection: str
) -> None:
    first, second = await asyncio.gather(
        answer(stack, collection, DEMO_QUESTIONS[0], max_rounds=1),
        answer(stack, collection, "How tall is the Zorblat Tower?", max_rounds=1),
    )
    assert first.session_id != second.session_id
    assert first.passages[0].document_id == "wiki/Sputnik 1"
    assert second.passages[0].document_id == PLANTED.id
    for result in (first, second):
        requests = [e for e in events(stack, result.session_id) if e["kind"] == "answer.request"]
        assert [r["payload"]["question"] for r in requests] == [result.question]


@pytest.mark.parametrize(
    "payload",
    [
        {"question": ""},
        {"question": "x" * 5000},
        {"question": "ok?", "k": 0},
        {"question": "ok?", "max_rounds": 99},
        {"question": "ok?", "colour": "blue"},
    ],
    ids=["empty", "oversize", "k-out-of-range", "rounds-out-of-range", "unknown-field"],
)
async def test_bad_input_is_rejected_before_any_session(
    stack: Stack, payload: dict[str, Any], a2a_http: httpx.AsyncClient
) -> None:
    before = httpx.get(f"{stack.registry_url}/sessions", timeout=5).json()
    async with Peers.over_http(CommonSettings(), registry_url=stack.registry_url) as peers:
        client = await peers.client(await peers.find("answer"))
        with pytest.raises(SkillFailed) as failed:
            await call_skill(client, "answer", payload)
    assert failed.value.task.status.state == TaskState.TASK_STATE_REJECTED
    after = httpx.get(f"{stack.registry_url}/sessions", timeout=5).json()
    assert len(after) == len(before)  # nothing negotiated, nothing half-written


async def test_unknown_collection_is_rejected_naming_the_known_ones(
    stack: Stack, collection: str
) -> None:
    with pytest.raises(SkillFailed) as failed:
        await answer(stack, "no_such_collection", "What is Sputnik?")
    assert failed.value.task.status.state == TaskState.TASK_STATE_REJECTED
    assert "no_such_collection" in str(failed.value)
    assert collection in str(failed.value)  # the known collections are listed


def canceled_writes(stack: Stack) -> float:
    """The writer's count of write tasks that ended canceled (parsed from /metrics)."""
    text = httpx.get(f"{stack.url_of('writer')}/metrics", timeout=5).text
    return metric_value(text, "scriptorium_agent_tasks_total", skill="write", outcome="canceled")


async def _cancel_once_writing(client: Client, collection: str) -> tuple[Task | None, str]:
    """Ask, and cancel as the writer's first tokens arrive: the canceled task and the session.

    ``None`` for the task when the answer had finished before the cancel reached it (a
    short draft on a busy machine): that is a race lost by the test, not a wrong cancel.
    """
    request = skill_message(
        "answer", AnswerRequest(question=DEMO_QUESTIONS[0], collection=collection)
    )
    task_id = session_id = ""
    async for event in client.send_message(request):
        if event.HasField("status_update"):
            task_id = event.status_update.task_id
            data = get_data_parts(list(event.status_update.status.message.parts))
            if data and data[0].get("phase") == "session":
                session_id = data[0]["session_id"]
        if event.HasField("artifact_update"):  # the writer is writing: cancel now
            task_id = task_id or event.artifact_update.task_id
            break
    assert task_id
    assert session_id
    try:
        return await client.cancel_task(CancelTaskRequest(id=task_id)), session_id
    except TaskNotCancelableError:
        task = await client.get_task(GetTaskRequest(id=task_id))
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, "not cancelable, not done"
        return None, session_id


async def test_cancel_reaches_the_writer_and_releases_the_session(
    stack: Stack, collection: str
) -> None:
    before = canceled_writes(stack)
    async with Peers.over_http(CommonSettings(), registry_url=stack.registry_url) as peers:
        client = await peers.client(await peers.find("answer"))
        for _ in range(3):  # a hard stop: a cancel that always came too late fails the test
            canceled, session_id = await _cancel_once_writing(client, collection)
            if canceled is not None:
                break
    assert canceled is not None, "every answer ended before its cancel arrived"
    assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    await wait_for(lambda: canceled_writes(stack) > before, 30, "the writer's task not canceled")
    await wait_for(
        lambda: (
            httpx.get(f"{stack.registry_url}/sessions/{session_id}", timeout=5).json()["state"]
            == "released"
        ),
        30,
        "the session was not released",
    )


# --- failures: a second stack with two writers ---------------------------------------------


@pytest.fixture(scope="module")
async def replicas(stack_factory: StackFactory, inference_url: str) -> AsyncIterator[Stack]:
    team = stack_factory(env={"SCRIPTORIUM_INFERENCE_URL": inference_url})
    second = team.add_replica("writer", "w2")
    await wait_for(
        lambda: any(r["id"] == second and r["state"] == "healthy" for r in team.agents_json()),
        120,
        "the second writer did not register",
    )
    sputnik = [d for d in corpus() if d.id in ("wiki/Sputnik 1", "wiki/Yuri Gagarin")]
    await ingest(team.registry_url, "default", sputnik)
    yield team
    await asyncio.to_thread(team.stop)  # its processes do not idle through later modules


async def test_fault_writer_killed_mid_question_is_rebound_and_the_question_completes(
    replicas: Stack,
) -> None:
    session: dict[str, str] = {}
    killed: list[str] = []

    def progress(text: str, data: dict[str, object]) -> None:
        if data.get("phase") == "session":
            session["id"] = str(data["session_id"])

    def tokens(artifact_id: str, text: str) -> None:
        if killed or "id" not in session:
            return
        bound = httpx.get(f"{replicas.registry_url}/sessions/{session['id']}", timeout=5).json()
        writer = bound["bindings"]["writer"]
        key = "w2" if writer == "writer-w2" else "writer"
        replicas.processes[key].kill()  # SIGKILL: no goodbye, the stream just breaks
        killed.append(writer)

    result = await ask_on(
        replicas.registry_url,
        AnswerRequest(question=DEMO_QUESTIONS[0], max_rounds=1),
        on_progress=progress,
        on_tokens=tokens,
    )
    assert killed, "no token arrived before the answer"
    assert result.sentences or result.abstained
    log = events(replicas, result.session_id)
    rebound = [e for e in log if e["kind"] == "session.rebound"]
    assert rebound
    assert rebound[0]["payload"]["role"] == "writer"
    assert rebound[0]["payload"]["old"] == killed[0]
    assert any(e["kind"] == "write.unreachable" for e in log)


async def test_fault_dead_inference_agent_fails_the_task_clearly(replicas: Stack) -> None:
    replicas.processes["inference"].kill()
    with pytest.raises(SkillFailed) as failed:
        await asyncio.wait_for(
            ask_on(replicas.registry_url, AnswerRequest(question=DEMO_QUESTIONS[0], max_rounds=1)),
            timeout=60,
        )
    assert failed.value.task.status.state == TaskState.TASK_STATE_FAILED
    assert "inference" in str(failed.value)


async def test_llm_judge_mode_gives_the_same_critique_shape(
    stack: Stack, redis_url: str, a2a_http: httpx.AsyncClient
) -> None:
    """With SCRIPTORIUM_CRITIC_JUDGE=llm the served model decides support (SmolLM2 is no judge:
    only the shape and the mode are checked, not its verdicts)."""
    settings = CriticSettings(
        redis_url=redis_url, redis_prefix=stack.settings.redis_prefix, critic_judge="llm"
    )
    passages = [passage("Sputnik 1 was launched by the Soviet Union on 4 October 1957.")]
    draft = Draft(
        text="",
        sentences=[DraftSentence(text="The Soviet Union launched Sputnik 1.", citations=[1])],
    )
    async with running_agent(critic_parts(settings), settings) as url:
        client = await open_client(url, a2a_http)
        critique = await call_skill(
            client,
            "critique",
            CritiqueRequest(question="Who launched Sputnik 1?", draft=draft, passages=passages),
            result=Critique,
        )
    assert critique.judge == "llm"
    (sentence,) = critique.sentences
    assert sentence.support in (0.0, 1.0)  # a yes/no judgement, not the forest's probability
    assert sentence.best_passage == 1
