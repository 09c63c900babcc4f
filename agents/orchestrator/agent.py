"""The orchestrator: skill ``answer`` runs the loop over a negotiated session.

One session per question binds a retriever, writer, critic and inference instance; its id
is the A2A ``contextId`` of every hop, so the writer and critic reach the inference instance
bound to it, and every exchange lands in the session's event log with its timing. The loop
itself (:mod:`agents.orchestrator.loop`) knows nothing of A2A; this module turns its events
into progress updates and the final :class:`~protocol.payloads.Answer`.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

from a2a.helpers import new_data_part, new_text_part
from a2a.types import StreamResponse, Task
from pydantic import BaseModel, Field, ValidationError

from agents.orchestrator.loop import Critiqued, Done, Drafted, Retrieved, answer_rounds
from agents.orchestrator.metrics import record_answer
from agents.scaffold.app import AgentParts
from agents.scaffold.executor import BadRequest, SkillCall, SkillError
from agents.scaffold.peers import Peers, TeamSession
from agents.scaffold.settings import AgentSettings
from protocol import telemetry
from protocol.cards import CardSpec, Skill
from protocol.client import SkillFailed, UpdateCallback
from protocol.payloads import (
    RECORD_ANNOTATIONS,
    Answer,
    AnswerCitation,
    AnswerRequest,
    AnswerSentence,
    Critique,
    CritiqueRequest,
    Draft,
    Passage,
    RecordedResult,
    SearchRequest,
    SearchResult,
    SentenceVerdict,
    WriteRequest,
)
from protocol.text import render_answer

CARD = CardSpec(
    name="orchestrator",
    description=(
        "Answers questions from the document store: retrieves passages, has the writer draft "
        "a cited answer and the critic check it, revising until accepted or out of rounds."
    ),
    capacity=16,
    skills=[
        Skill(
            id="answer",
            name="Answer a question",
            description="AnswerRequest (or plain text) -> Answer: sentences citing passages "
            "as [n], each checked by the critic or openly marked unsupported. Streams phase "
            "updates and the draft's tokens ('answer' artifacts); the 'result' artifact holds "
            "the Answer as data and as cited text with its sources.",
            tags=["question-answering", "rag", "citations"],
            examples=["What happens to a session when one of its agents dies?"],
            input_modes=("application/json", "text/plain"),
            output_modes=("application/json", "text/plain"),
        )
    ],
    primary_skill="answer",
)
ROLES = {"retriever": "search", "writer": "write", "critic": "critique", "inference": "generate"}
ANSWER_ARTIFACT = "answer"
RESULT_ARTIFACT = "result"
SNIPPET_CHARS = 240
M = TypeVar("M", bound=BaseModel)


def answer_request(text: str) -> AnswerRequest:
    """A plain text message is the question, answered with the default settings."""
    return AnswerRequest(question=text)


class OrchestratorSettings(AgentSettings):
    """The orchestrator's settings (prefix ``SCRIPTORIUM_``)."""

    step_timeout_s: float = Field(
        default=180.0, gt=0, description="Longest wait for one downstream step's next event."
    )


class Orchestrator:
    """The answer skill over the peers found through the registry."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self._peers: Peers | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with Peers.connect(
            self.settings, caller="orchestrator", request_timeout_s=self.settings.step_timeout_s
        ) as peers:
            self._peers = peers
            yield
        self._peers = None

    @property
    def peers(self) -> Peers:
        if self._peers is None:
            raise SkillError("the orchestrator is still starting; try again in a moment")
        return self._peers

    async def answer(self, call: SkillCall) -> None:
        request = call.parse(AnswerRequest, from_text=answer_request)
        if not request.question.strip():
            raise BadRequest("empty question: ask something the documents might answer")
        started = time.perf_counter()
        # Negotiated inside this task's span: the session records the span's trace id.
        async with self.peers.session(ROLES) as session:
            telemetry.annotate({telemetry.CONVERSATION_ID: session.id})
            await call.progress(f"session {session.id}", phase="session", session_id=session.id)
            await session.note(
                "answer.request", payload=request.model_dump(mode="json", exclude={"recorded"})
            )
            if request.recorded:
                steps = [r.step for r in request.recorded]
                await session.note("answer.fork", payload={"recorded_steps": steps})
            team = SessionTeam(session, call, request.recorded)
            timings = {"retrieve": 0.0, "write": 0.0, "critique": 0.0, "engine": 0.0}
            done: Done | None = None
            async for event in answer_rounds(request, team):
                if isinstance(event, Retrieved):
                    timings["retrieve"] += event.ms
                    await call.progress(
                        f"round {event.round}: {len(event.passages)} passages "
                        f"({event.new} new, {event.hop})",
                        phase="retrieved",
                        round=event.round,
                        query=event.query,
                        hop=event.hop,
                        passages=len(event.passages),
                    )
                elif isinstance(event, Drafted):
                    timings["write"] += event.ms
                    timings["engine"] += event.draft.engine_ms
                    await call.progress(
                        f"round {event.round}: {event.mode} draft, "
                        f"{len(event.draft.sentences)} sentences",
                        phase="drafted",
                        round=event.round,
                        mode=event.mode,
                    )
                elif isinstance(event, Critiqued):
                    timings["critique"] += event.ms
                    supported = sum(s.verdict == "supported" for s in event.critique.sentences)
                    await call.progress(
                        f"round {event.round}: critic says {event.critique.verdict} "
                        f"({supported}/{len(event.critique.sentences)} sentences supported)",
                        phase="critiqued",
                        round=event.round,
                        verdict=event.critique.verdict,
                        covered=event.critique.coverage.covered,
                    )
                else:
                    done = event
            assert done is not None
            timings["total"] = round((time.perf_counter() - started) * 1000, 2)
            answer = build_answer(request, done, session.id, timings)
            # The whole answer but its history (the steps before it are in the log already).
            await session.note(
                "answer.result", payload=answer.model_dump(mode="json", exclude={"history"})
            )
        record_answer(answer)
        # Text for generic A2A clients (ADK's RemoteA2aAgent, chat UIs) beside the data, in
        # one last chunk: a streaming client takes it as the final answer, not a partial one.
        await call.updater.add_artifact(
            [new_text_part(answer_text(answer)), new_data_part(answer.model_dump(mode="json"))],
            name=RESULT_ARTIFACT,
            last_chunk=True,
        )


class SessionTeam:
    """The loop's :class:`~agents.orchestrator.loop.Team` over one session's instances."""

    def __init__(
        self, session: TeamSession, call: SkillCall, recorded: Sequence[RecordedResult] = ()
    ) -> None:
        self.session = session
        self.call = call
        self.recorded = deque(recorded)

    async def search(self, request: SearchRequest) -> list[Passage]:
        result = await self._step("retriever", request, SearchResult)
        return result.passages

    async def write(self, request: WriteRequest, round_number: int) -> Draft:
        artifact_id = f"{ANSWER_ARTIFACT}-{round_number}"

        async def forward(event: StreamResponse, task: Task) -> None:
            if event.HasField("artifact_update"):
                update = event.artifact_update
                text = "".join(p.text for p in update.artifact.parts if p.text)
                if text or update.last_chunk:
                    await self.call.stream_text(
                        artifact_id, text, name=ANSWER_ARTIFACT, last=update.last_chunk
                    )

        return await self._step("writer", request, Draft, forward)

    async def critique(self, request: CritiqueRequest) -> Critique:
        return await self._step("critic", request, Critique)

    async def _step(
        self,
        role: str,
        payload: BaseModel,
        result: type[M],
        on_update: UpdateCallback | None = None,
    ) -> M:
        skill = ROLES[role]
        if self.recorded:
            recorded = self.recorded.popleft()
            if recorded.skill == skill:
                return await self._replayed(recorded, payload, result)
            # The loop asked for another step than the recording holds: run live from here.
            self.recorded.clear()
        try:
            return await self.session.call(role, payload, result=result, on_update=on_update)
        except SkillFailed as exc:
            if exc.rejected:
                raise BadRequest(f"the {role} refused the request: {exc.reason}") from exc
            raise SkillError(f"the {role} failed: {exc.reason}") from exc

    async def _replayed(self, recorded: RecordedResult, payload: BaseModel, result: type[M]) -> M:
        """A step answered from the recording: logged like a live one, marked ``replayed``."""
        try:
            answer = result.model_validate(
                {k: v for k, v in recorded.result.items() if k not in RECORD_ANNOTATIONS}
            )
        except ValidationError as exc:
            raise BadRequest(
                f"recorded step {recorded.step} is not a valid {result.__name__}: {exc}"
            ) from exc
        marker = {"replayed": recorded.step}
        request = {**payload.model_dump(mode="json"), **marker}
        await self.session.note(f"{recorded.skill}.request", payload=request)
        body = {**answer.model_dump(mode="json"), **marker, "ms": 0.0}
        await self.session.note(f"{recorded.skill}.result", payload=body)
        return answer


def build_answer(
    request: AnswerRequest, done: Done, session_id: str, timings: dict[str, float]
) -> Answer:
    """The final answer: every sentence either supported by what it cites or marked."""
    draft, critique, passages = done.draft, done.critique, done.passages
    if done.empty_store:
        text = (
            f"No documents in collection {request.collection!r}; add some with "
            f"`scriptorium ingest PATH --collection {request.collection}` and ask again."
        )
        return Answer(
            question=request.question,
            text=text,
            sentences=[],
            passages=[],
            verdict="revise",
            rounds=done.rounds,
            abstained=True,
            session_id=session_id,
            timings_ms=timings,
            history=done.history,
        )
    checks: list[SentenceVerdict | None] = list(critique.sentences) if critique else []
    sentences: list[AnswerSentence] = []
    for index, sentence in enumerate(draft.sentences):
        check = checks[index] if index < len(checks) else None
        verdict = check.verdict if check is not None else "unsupported"
        citations = [
            _citation(n, passages, check, sentence.origin or "model", sentence.support)
            for n in sentence.citations
            if 1 <= n <= len(passages)
        ]
        sentences.append(
            AnswerSentence(
                text=sentence.text,
                citations=citations,
                verdict=verdict,
                support=check.support if check is not None else 0.0,
                unsupported=verdict != "supported",
            )
        )
    text = draft.text
    if sentences:
        text = render_answer(
            [(s.text, [c.passage for c in s.citations], s.unsupported) for s in sentences]
        )
    return Answer(
        question=request.question,
        text=text,
        sentences=sentences,
        passages=passages,
        verdict=critique.verdict if critique is not None else "revise",
        rounds=done.rounds,
        extractive=draft.extractive,
        abstained=draft.abstained,
        session_id=session_id,
        timings_ms=timings,
        history=done.history,
    )


def answer_text(answer: Answer) -> str:
    """The answer as plain text: its cited sentences, then each cited passage once.

    ``[n] source: "snippet"`` lines let a client that reads only text resolve ``[n]``.
    """
    cited: dict[int, AnswerCitation] = {}
    for sentence in answer.sentences:
        for citation in sentence.citations:
            cited.setdefault(citation.passage, citation)
    sources = [
        f'[{number}] {citation.source}: "{" ".join(citation.snippet.split())}"'
        for number, citation in sorted(cited.items())
    ]
    return "\n\n".join([answer.text, "\n".join(sources)]) if sources else answer.text


def _citation(
    number: int,
    passages: list[Passage],
    check: SentenceVerdict | None,
    origin: str,
    support: float | None,
) -> AnswerCitation:
    passage = passages[number - 1]
    if check is not None and check.best_passage == number and check.best_span:
        snippet = check.best_span
    else:
        snippet = " ".join(passage.text.split())[:SNIPPET_CHARS]
    score = check.support if check is not None else (support or 0.0)
    return AnswerCitation(
        passage=number,
        chunk_id=passage.chunk_id,
        document_id=passage.document_id,
        source=passage.source,
        snippet=snippet,
        support=score,
        origin="attached"
        if origin == "attached"
        else "extractive"
        if origin == "extractive"
        else "model",
    )


def parts(settings: OrchestratorSettings) -> AgentParts:
    """The orchestrator's parts for explicit settings."""
    orchestrator = Orchestrator(settings)
    return AgentParts(
        card=CARD, handlers={"answer": orchestrator.answer}, lifespan=orchestrator.lifespan
    )


def build(settings: AgentSettings) -> AgentParts:
    """The orchestrator's parts, configured from the environment."""
    return parts(OrchestratorSettings(**settings.model_dump(exclude_unset=True)))
