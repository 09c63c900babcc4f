"""ADK agents call Scriptorium over the real A2A wire.

1. ``RemoteA2aAgent`` given the orchestrator's card URL and a plain-text question ends with a
   cited answer as text (the real stack).
2. The ADK workflow example (``scriptorium.examples.adk_workflow``): a ``LoopAgent`` of
   writer and critic steps that stops when the critic accepts or at ``max_iterations`` —
   first over stub agents whose verdicts the test scripts, then over the real stack.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from a2a.types import AgentCard
from google.adk.agents.remote_a2a_agent import RemoteA2aAgent
from google.adk.events import Event

from agents.orchestrator.agent import answer_text
from agents.retriever.library import document_payload
from agents.scaffold.app import AgentParts
from agents.scaffold.executor import SkillCall, SkillError
from agents.scaffold.peers import Peers
from agents.scaffold.settings import AgentSettings
from protocol.cards import CARD_PATH, CardSpec, Skill, card_from_dict
from protocol.payloads import (
    Answer,
    AnswerCitation,
    AnswerSentence,
    Critique,
    CritiqueRequest,
    Document,
    Draft,
    DraftSentence,
    Passage,
    SearchRequest,
    SearchResult,
    WriteRequest,
)
from protocol.settings import CommonSettings
from protocol.text import parse_answer
from scriptorium.corpora import DEMO_QUESTIONS, demo_documents
from scriptorium.examples.adk_workflow import (
    CRITIQUE,
    DRAFT,
    ROUNDS,
    SEARCH,
    StepFailed,
    _data_parts,
    ask,
    build_workflow,
    discover,
    fetch_cards,
    final_text,
)
from scriptorium.inline import ingest_documents
from scriptorium.launcher import Stack
from scriptorium.testing import StackFactory, running_agent

#: A few articles for the real stack; DEMO_QUESTIONS[0] is answered by Sputnik 1.
STEP_LINE = re.compile(r"(retrieve|write|critique|verdict): ")
ARTICLES = {f"wiki/{name}" for name in ("Sputnik 1", "Yuri Gagarin", "Satellite", "Space Race")}


def articles() -> list[Document]:
    return [d for d in map(document_payload, demo_documents()) if d.id in ARTICLES]


def split_sources(text: str) -> tuple[str, dict[int, str]]:
    """A text answer's cited prose, and its ``[n] source: "..."`` lines as {n: source}."""
    prose, _, tail = text.partition("\n\n")
    sources: dict[int, str] = {}
    for line in tail.splitlines():
        if line.startswith("[") and "]" in line:
            number, _, rest = line[1:].partition("] ")
            if number.isdigit():
                sources[int(number)] = rest.split(': "', 1)[0]
    return prose, sources


def cited_numbers(prose: str) -> set[int]:
    return {n for sentence in parse_answer(prose) for n in sentence.citations}


def test_the_answer_as_text_lists_each_cited_passage_once() -> None:
    def citation(n: int) -> AnswerCitation:
        return AnswerCitation(
            passage=n,
            chunk_id=f"c{n}",
            document_id=f"d{n}",
            source=f"s{n}",
            snippet=f"span\n {n}",
            support=0.9,
            origin="model",
        )

    def sentence(text: str, *numbers: int) -> AnswerSentence:
        cites = [citation(n) for n in numbers]
        return AnswerSentence(text=text, citations=cites, verdict="supported", support=0.9)

    answer = Answer(
        question="q?",
        text="A [2]. B [1][2].",
        sentences=[sentence("A.", 2), sentence("B.", 1, 2)],
        passages=[],
        verdict="accept",
        rounds=1,
        session_id="s",
    )
    assert answer_text(answer) == 'A [2]. B [1][2].\n\n[1] s1: "span 1"\n[2] s2: "span 2"'
    abstained = answer.model_copy(update={"text": "The documents do not say.", "sentences": []})
    assert answer_text(abstained) == "The documents do not say."


# --- the workflow over stub agents: verdicts scripted by the test ------------------------------

PASSAGES = [
    Passage(chunk_id=f"c{n}", document_id=f"d{n}", source=f"stub:{n}", text=text, score=1.0)
    for n, text in ((1, "Sputnik 1 was launched in 1957."), (2, "Laika flew on Sputnik 2."))
]


class Stubs:
    """A retriever (two skills, so requests must name one), a writer and a critic."""

    def __init__(self, verdicts: list[str], critic_fails: bool = False) -> None:
        self.verdicts = verdicts
        self.critic_fails = critic_fails
        self.searches: list[SearchRequest] = []
        self.writes: list[WriteRequest] = []
        self.critiques: list[CritiqueRequest] = []

    async def search(self, call: SkillCall) -> None:
        request = call.parse(SearchRequest)
        self.searches.append(request)
        await call.emit(SearchResult(query=request.query, passages=PASSAGES))

    async def ingest(self, call: SkillCall) -> None:
        raise SkillError("the stub retriever ingests nothing")

    async def write(self, call: SkillCall) -> None:
        request = call.parse(WriteRequest)
        self.writes.append(request)
        sentence = DraftSentence(text=f"Draft {len(self.writes)} says 1957.", citations=[1])
        await call.stream_text("answer", "Draft ...", name="answer", last=True)
        await call.emit(
            Draft(text=f"Draft {len(self.writes)} says 1957 [1].", sentences=[sentence])
        )

    async def critique(self, call: SkillCall) -> None:
        request = call.parse(CritiqueRequest)
        self.critiques.append(request)
        if self.critic_fails:
            raise SkillError("the grounding model is not trained; run `scriptorium critic train`")
        await call.progress("checking", phase="critique")
        verdict = self.verdicts[min(len(self.critiques), len(self.verdicts)) - 1]
        await call.emit(
            Critique.model_validate(
                {"verdict": verdict, "feedback": [f"round {len(self.critiques)}"],
                 "coverage": {"covered": True}}
            )
        )  # fmt: skip

    def parts(self) -> dict[str, AgentParts]:
        def spec(name: str, *skills: str) -> CardSpec:
            return CardSpec(
                name=name,
                description=f"stub {name}",
                capacity=4,
                skills=[Skill(id=s, name=s, description=s, tags=["stub"]) for s in skills],
            )

        return {
            "retriever": AgentParts(
                card=spec("retriever", "search", "ingest"),
                handlers={"search": self.search, "ingest": self.ingest},
            ),
            "writer": AgentParts(card=spec("writer", "write"), handlers={"write": self.write}),
            "critic": AgentParts(
                card=spec("critic", "critique"), handlers={"critique": self.critique}
            ),
        }


@pytest.fixture
def stub_settings(redis_url: str, redis_prefix: str) -> AgentSettings:
    return AgentSettings(redis_url=redis_url, redis_prefix=redis_prefix)


async def run_on_stubs(
    stubs: Stubs, settings: AgentSettings, rounds: int
) -> tuple[str, dict[str, Any], list[Event]]:
    parts = stubs.parts()
    async with (
        running_agent(parts["retriever"], settings) as retriever,
        running_agent(parts["writer"], settings) as writer,
        running_agent(parts["critic"], settings) as critic,
        httpx.AsyncClient(timeout=10) as http,
    ):
        cards = await fetch_cards(http, retriever, writer, critic)
        workflow = build_workflow(cards, rounds=rounds)
        events: list[Event] = []
        text, state = await ask(workflow, "When was Sputnik 1 launched?", on_event=events.append)
    return text, state, events


async def test_the_loop_revises_until_the_critic_accepts(stub_settings: AgentSettings) -> None:
    stubs = Stubs(["revise", "accept"])
    text, state, events = await run_on_stubs(stubs, stub_settings, rounds=3)
    assert state[ROUNDS] == 2  # accepted in round 2: the third iteration never ran
    assert [s.query for s in stubs.searches] == ["When was Sputnik 1 launched?"]
    first, second = stubs.writes
    assert (first.previous, first.critique) == (None, None)
    assert second.previous is not None
    assert second.previous.text == "Draft 1 says 1957 [1]."
    assert second.critique is not None
    assert second.critique.feedback == ["round 1"]
    assert [c.draft.text for c in stubs.critiques] == [
        "Draft 1 says 1957 [1].",
        "Draft 2 says 1957 [1].",
    ]
    assert all(c.passages == PASSAGES for c in stubs.critiques)
    assert [e.author for e in events if e.actions.escalate] == ["verdict"]
    assert text == 'Draft 2 says 1957 [1].\n\n[1] stub:1: "Sputnik 1 was launched in 1957."'
    assert Draft.model_validate(state[DRAFT]).text == "Draft 2 says 1957 [1]."
    assert SearchResult.model_validate(state[SEARCH]).passages == PASSAGES


async def test_the_loop_stops_at_max_iterations_when_the_critic_never_accepts(
    stub_settings: AgentSettings,
) -> None:
    stubs = Stubs(["revise"])
    text, state, events = await run_on_stubs(stubs, stub_settings, rounds=2)
    assert (len(stubs.writes), len(stubs.critiques), state[ROUNDS]) == (2, 2, 2)
    assert not any(e.actions.escalate for e in events)
    assert Critique.model_validate(state[CRITIQUE]).verdict == "revise"
    assert text.endswith("The critic did not accept this draft in 2 round(s).")


async def test_a_failed_step_stops_the_workflow_with_the_agents_reason(
    stub_settings: AgentSettings,
) -> None:
    stubs = Stubs(["accept"], critic_fails=True)
    with pytest.raises(
        StepFailed, match=r"critique: TASK_STATE_FAILED: .*scriptorium critic train"
    ):
        await run_on_stubs(stubs, stub_settings, rounds=3)
    assert len(stubs.writes) == 1  # nothing ran after the failure


# --- the real stack ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def adk_stack(stack_factory: StackFactory, inference_url: str) -> AsyncIterator[Stack]:
    """A stack of this module's own: a plain-text question is answered from 'default'."""
    team = stack_factory(env={"SCRIPTORIUM_INFERENCE_URL": inference_url})
    documents = articles()
    settings = CommonSettings()
    async with Peers.over_http(settings, registry_url=team.registry_url) as peers:
        report = await ingest_documents(
            peers, documents, "default", max_bytes=settings.max_request_bytes
        )
    assert report.ingested == len(ARTICLES)
    yield team
    team.stop()


@pytest.fixture
def sources() -> dict[str, str]:
    return {d.source: d.id or "" for d in articles()}


def orchestrator_card(stack: Stack) -> tuple[str, AgentCard]:
    url = stack.url_of("orchestrator") + CARD_PATH
    return url, card_from_dict(httpx.get(url, timeout=10).json())


@pytest.mark.slow
async def test_remote_a2a_agent_on_the_orchestrator_card_gets_a_cited_answer(
    adk_stack: Stack, sources: dict[str, str]
) -> None:
    url, card = orchestrator_card(adk_stack)
    origin = url.removesuffix(CARD_PATH)
    # ADK checks a card it fetches itself: every interface must share the card's origin.
    assert all(i.url.startswith(origin) for i in card.supported_interfaces), card
    orchestrator = RemoteA2aAgent(name="scriptorium", agent_card=url)
    events: list[Event] = []
    text, _ = await ask(orchestrator, DEMO_QUESTIONS[0], on_event=events.append)
    await orchestrator.cleanup()

    prose, listed = split_sources(text)
    cited = cited_numbers(prose)
    assert cited, text
    assert cited == set(listed), text  # every [n] resolves to a listed passage, no extras
    assert set(listed.values()) <= set(sources), text
    assert "wikipedia:Sputnik 1" in listed.values(), text
    # The same final event carries the Answer as data; the text is rendered from it.
    final = next(e for e in reversed(events) if final_text(e) == text)
    (data,) = _data_parts(final)
    answer = Answer.model_validate(data)
    assert answer_text(answer) == text
    for number in cited:
        assert answer.passages[number - 1].source == listed[number]
    # Progress arrived while it ran, as thoughts.
    thoughts = [p.text for e in events if e.content for p in e.content.parts or [] if p.thought]
    assert any(t and "critic says" in t for t in thoughts), thoughts


@pytest.mark.slow
async def test_the_workflow_example_drives_the_real_writer_and_critic(
    adk_stack: Stack, sources: dict[str, str]
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        cards = await discover(adk_stack.registry_url, http)
    events: list[Event] = []
    text, state = await ask(build_workflow(cards, rounds=2), DEMO_QUESTIONS[0], events.append)

    rounds = state[ROUNDS]
    critique = Critique.model_validate(state[CRITIQUE])
    assert 1 <= rounds <= 2
    assert critique.verdict == "accept" or rounds == 2  # stopped by the critic or the hard stop
    assert [e.author for e in events if e.actions.escalate] == (
        ["verdict"] if critique.verdict == "accept" else []
    )
    passages = SearchResult.model_validate(state[SEARCH]).passages
    assert "wikipedia:Sputnik 1" in {p.source for p in passages}
    prose, listed = split_sources(text)
    assert prose == Draft.model_validate(state[DRAFT]).text
    cited = cited_numbers(prose)
    assert cited == set(listed), text
    for number in cited:
        assert passages[number - 1].source == listed[number]
        assert listed[number] in sources
    # The writer's tokens streamed through as partial events of its step.
    assert any(e.partial and e.author == "write_a2a" for e in events)


@pytest.mark.slow
async def test_the_workflow_example_runs_as_a_module(
    adk_stack: Stack, sources: dict[str, str]
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scriptorium.examples.adk_workflow",
        DEMO_QUESTIONS[0],
        "--registry-url",
        adk_stack.registry_url,
        "--rounds",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, err.decode()
    prose, listed = split_sources(out.decode().strip())
    assert prose, out.decode()
    assert cited_numbers(prose) == set(listed), out.decode()
    assert set(listed.values()) <= set(sources), out.decode()
    progress = err.decode().splitlines()
    steps = [line.split(":")[0] for line in progress if STEP_LINE.match(line)]
    assert steps == ["retrieve", "write", "critique", "verdict"], progress
    assert re.fullmatch(r"critic: (accept|revise) after 1 round\(s\)", progress[-1]), progress
