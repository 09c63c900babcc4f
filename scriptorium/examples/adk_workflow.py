"""Scriptorium's retriever, writer and critic driven by ADK workflow agents.

ADK's ``SequentialAgent`` and ``LoopAgent`` run three Scriptorium agents over A2A; no model
runs inside ADK (the writer asks the stack's inference agent)::

    SequentialAgent "scriptorium"
      retrieve      retriever: SearchRequest -> SearchResult
      LoopAgent "revise", at most ``rounds`` iterations
        write       writer: WriteRequest (with the last draft and critique) -> Draft
        critique    critic: CritiqueRequest -> Critique
        verdict     escalates (ends the loop) when the critic accepts
      report        the last draft with its sources, as the final text event

Each remote step is a :class:`RemoteStep` around ADK's ``RemoteA2aAgent``. Its
``context_builder`` sends one A2A data part built from session state (by default ADK would
send the conversation, other agents' turns flattened to text), ``a2a_request_meta_provider``
names the skill, and the data artifact that comes back is validated and stored in session
state for the next step. Against a running stack (``scriptorium up``, documents ingested)::

    python -m scriptorium.examples.adk_workflow "Who launched Sputnik 1?" \\
        --registry-url http://127.0.0.1:8700 [--collection C] [--k 5] [--rounds 3]

The cited draft goes to stdout, one line per step and the critic's verdict to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import warnings
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from a2a.client import ClientConfig, ClientFactory
from a2a.helpers import get_data_parts, new_data_part
from a2a.types import AgentCard, Part
from pydantic import ValidationError

from protocol.extras import extra

with extra("adk", feature="the ADK example"):
    from google.adk.a2a.converters.part_converter import (
        GenAIPartToA2APartConverter,
        convert_genai_part_to_a2a_part,
    )
    from google.adk.agents import BaseAgent, LoopAgent, SequentialAgent
    from google.adk.agents.invocation_context import InvocationContext
    from google.adk.agents.remote_a2a_agent import RemoteA2aAgent
    from google.adk.events import Event, EventActions
    from google.adk.runners import Runner
    from google.adk.sessions import InMemorySessionService
    from google.genai import types

from protocol.cards import CARD_PATH, SKILL_METADATA_KEY, CardError, card_from_dict
from protocol.client import http_client
from protocol.payloads import (
    Critique,
    CritiqueRequest,
    Draft,
    Passage,
    Payload,
    SearchRequest,
    SearchResult,
    WriteRequest,
    integral_numbers,
)
from protocol.settings import CommonSettings
from registry.client import RegistryClient
from registry.errors import RegistryError

SEARCH, DRAFT, CRITIQUE, ROUNDS = "search", "draft", "critique", "rounds"
APP_NAME = "scriptorium-adk-workflow"
FAILED_STATES = ("TASK_STATE_FAILED", "TASK_STATE_REJECTED", "TASK_STATE_CANCELED")
SNIPPET_CHARS = 160
#: Builds a step's request from the question and the session state.
RequestBuilder = Callable[[str, Mapping[str, Any]], Payload]


class StepFailed(RuntimeError):
    """A remote step ended without a result; the message names the step and the reason."""


@dataclass(frozen=True)
class Cards:
    """Agent cards of the three agents the workflow drives (objects or card URLs).

    Prefer objects: ADK refuses a card it fetched itself when any of its interfaces is on
    another origin than the card (an agent's gRPC port of its own is), and uses a card
    handed over as it is.
    """

    retriever: AgentCard | str
    writer: AgentCard | str
    critic: AgentCard | str


async def discover(registry_url: str, http: httpx.AsyncClient) -> Cards:
    """The cards of a healthy retriever, writer and critic, as the registry holds them."""
    registry = RegistryClient(registry_url, http)
    cards: list[AgentCard] = []
    for skill in ("search", "write", "critique"):
        records = await registry.discover(skill)
        if not records:
            raise StepFailed(f"no healthy agent offers {skill!r} at {registry_url}")
        cards.append(card_from_dict(records[0].card))
    return Cards(*cards)


async def fetch_cards(http: httpx.AsyncClient, retriever: str, writer: str, critic: str) -> Cards:
    """The cards agents at these base URLs serve."""
    cards: list[AgentCard] = []
    for url in (retriever, writer, critic):
        response = await http.get(url.rstrip("/") + CARD_PATH)
        response.raise_for_status()
        cards.append(card_from_dict(response.json()))
    return Cards(*cards)


class RemoteStep(BaseAgent):
    """One Scriptorium skill as a workflow step: a data part out, a validated result into state.

    Its only sub-agent is the ``RemoteA2aAgent``; its events pass through (progress as
    thoughts, streamed tokens as partial events), then one event stores the result.
    """

    result_key: str
    result_type: type[Payload]
    clears: tuple[str, ...] = ()

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        remote = self.sub_agents[0]
        data: Any = None
        failure: str | None = None
        async with contextlib.aclosing(remote.run_async(ctx)) as events:
            async for event in events:
                yield event
                failure = failure or _failure(event)
                found = _data_parts(event)
                if found:
                    data = found[-1]
        if failure is not None or data is None:
            raise StepFailed(f"{self.name}: {failure or 'the agent returned no data artifact'}")
        try:
            result = self.result_type.model_validate(integral_numbers(data))
        except ValidationError as exc:
            raise StepFailed(f"{self.name}: not a {self.result_type.__name__}: {exc}") from exc
        delta: dict[str, Any] = dict.fromkeys(self.clears)
        delta[self.result_key] = result.model_dump(mode="json")
        yield Event(
            author=self.name,
            invocation_id=ctx.invocation_id,
            branch=ctx.branch,
            actions=EventActions(state_delta=delta),
        )


class Verdict(BaseAgent):
    """Counts the round; ends the loop (escalates) once the critic accepts the draft."""

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        state = ctx.session.state
        critique = Critique.model_validate(state[CRITIQUE])
        yield Event(
            author=self.name,
            invocation_id=ctx.invocation_id,
            branch=ctx.branch,
            actions=EventActions(
                state_delta={ROUNDS: int(state.get(ROUNDS) or 0) + 1},
                escalate=critique.verdict == "accept",
            ),
        )


class Report(BaseAgent):
    """The last draft with its cited sources, as the workflow's final text."""

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        state = ctx.session.state
        text = report_text(
            Draft.model_validate(state[DRAFT]),
            Critique.model_validate(state[CRITIQUE]),
            _passages(state),
            int(state[ROUNDS]),
        )
        yield Event(
            author=self.name,
            invocation_id=ctx.invocation_id,
            branch=ctx.branch,
            content=types.Content(role="model", parts=[types.Part(text=text)]),
        )


def report_text(draft: Draft, critique: Critique, passages: list[Passage], rounds: int) -> str:
    """The draft, a ``[n] source: "snippet"`` line per cited passage, a verdict short of accept."""
    cited = sorted({n for s in draft.sentences for n in s.citations if 1 <= n <= len(passages)})
    blocks = [draft.text]
    if cited:
        blocks.append(
            "\n".join(
                f'[{n}] {passages[n - 1].source}: "{_snippet(passages[n - 1].text)}"' for n in cited
            )
        )
    if critique.verdict != "accept":
        blocks.append(f"The critic did not accept this draft in {rounds} round(s).")
    return "\n\n".join(blocks)


def build_workflow(
    cards: Cards,
    *,
    collection: str = "default",
    k: int = 5,
    rounds: int = 3,
    client_factory: ClientFactory | None = None,
) -> SequentialAgent:
    """The retrieve → (write → critique → verdict)* → report workflow over ``cards``.

    ``rounds`` is the loop's hard stop (``LoopAgent.max_iterations``). ``client_factory``
    supplies the A2A client (e.g. one whose HTTP client carries a bearer token).
    """

    def search(question: str, state: Mapping[str, Any]) -> Payload:
        return SearchRequest(query=question, k=k, collection=collection)

    def step(
        name: str, card: AgentCard | str, skill: str, build: RequestBuilder, **kw: Any
    ) -> RemoteStep:
        remote = RemoteA2aAgent(
            name=f"{name}_a2a",
            agent_card=card,
            a2a_client_factory=client_factory,
            context_builder=_data_part_from_state(build),
            a2a_request_meta_provider=lambda ctx, message: {SKILL_METADATA_KEY: skill},
        )
        return RemoteStep(name=name, sub_agents=[remote], **kw)

    with warnings.catch_warnings():
        # ADK 2 deprecates both in favour of its graph Workflow, which cannot yet sit under
        # an LlmAgent; they still run and read as the loop they are.
        warnings.simplefilter("ignore", DeprecationWarning)
        loop = LoopAgent(
            name="revise",
            max_iterations=rounds,
            sub_agents=[
                step(
                    "write",
                    cards.writer,
                    "write",
                    write_request,
                    result_key=DRAFT,
                    result_type=Draft,
                ),
                step(
                    "critique",
                    cards.critic,
                    "critique",
                    critique_request,
                    result_key=CRITIQUE,
                    result_type=Critique,
                ),
                Verdict(name="verdict"),
            ],
        )
        return SequentialAgent(
            name="scriptorium",
            description="Retrieves passages, then drafts and critiques a cited answer.",
            sub_agents=[
                step(
                    "retrieve",
                    cards.retriever,
                    "search",
                    search,
                    result_key=SEARCH,
                    result_type=SearchResult,
                    clears=(DRAFT, CRITIQUE, ROUNDS),  # a new question starts from no draft
                ),
                loop,
                Report(name="report"),
            ],
        )


def write_request(question: str, state: Mapping[str, Any]) -> Payload:
    """Draft from the passages; from round 2 on, revise the last draft following its critique."""
    previous, critique = state.get(DRAFT), state.get(CRITIQUE)
    return WriteRequest(
        question=question,
        passages=_passages(state),
        previous=Draft.model_validate(previous) if previous and critique else None,
        critique=Critique.model_validate(critique) if previous and critique else None,
    )


def critique_request(question: str, state: Mapping[str, Any]) -> Payload:
    """Check the last draft against the passages."""
    return CritiqueRequest(
        question=question, draft=Draft.model_validate(state[DRAFT]), passages=_passages(state)
    )


async def ask(
    agent: BaseAgent, question: str, on_event: Callable[[Event], None] | None = None
) -> tuple[str, dict[str, Any]]:
    """Run ``agent`` on ``question`` in a fresh in-memory session: its final text and state.

    An event reporting an error (e.g. an agent that cannot be reached) raises
    :class:`StepFailed`.
    """
    sessions = InMemorySessionService()
    runner = Runner(app_name=APP_NAME, agent=agent, session_service=sessions)
    user = "scriptorium"
    session = await sessions.create_session(app_name=APP_NAME, user_id=user)
    message = types.Content(role="user", parts=[types.Part(text=question)])
    text = ""
    async for event in runner.run_async(user_id=user, session_id=session.id, new_message=message):
        if on_event is not None:
            on_event(event)
        if event.error_message:
            raise StepFailed(f"{event.author}: {event.error_message}")
        if event.is_final_response() and (said := final_text(event)):
            text = said
    done = await sessions.get_session(app_name=APP_NAME, user_id=user, session_id=session.id)
    return text, dict(done.state) if done is not None else {}


def final_text(event: Event) -> str:
    """The text an event says, thoughts left out."""
    parts = event.content.parts if event.content and event.content.parts else []
    return "".join(p.text for p in parts if p.text and not p.thought)


def _data_part_from_state(
    build: RequestBuilder,
) -> Callable[[InvocationContext, str, GenAIPartToA2APartConverter], tuple[list[Part], str | None]]:
    """A ``context_builder``: the request as one A2A data part, in a fresh A2A context.

    It builds the A2A part itself: ADK's converter (``convert``) makes a data part only
    from a function call or response, or from a ``text/plain`` blob in ADK's own tags.
    """

    def builder(
        ctx: InvocationContext, agent_name: str, convert: GenAIPartToA2APartConverter
    ) -> tuple[list[Part], str | None]:
        request = build(_question(ctx), ctx.session.state)
        return [new_data_part(request.model_dump(mode="json"))], None

    return builder


def _question(ctx: InvocationContext) -> str:
    content = ctx.user_content
    text = " ".join(p.text for p in (content.parts or []) if p.text) if content else ""
    if not text.strip():
        raise StepFailed("the workflow takes the question as the user's text message")
    return text.strip()


def _passages(state: Mapping[str, Any]) -> list[Passage]:
    return SearchResult.model_validate(state[SEARCH]).passages


def _data_parts(event: Event) -> list[Any]:
    """The A2A data parts an event carries (ADK holds each as a tagged inline blob)."""
    parts = event.content.parts if event.content and event.content.parts else []
    found: list[Any] = []
    for part in parts:
        if part.thought or part.inline_data is None:
            continue
        converted = convert_genai_part_to_a2a_part(part)
        if isinstance(converted, Part):
            found.extend(get_data_parts([converted]))
    return found


def _failure(event: Event) -> str | None:
    """Why the remote task failed, when this event says it did."""
    if event.error_message:
        return event.error_message
    response = (event.custom_metadata or {}).get("a2a:response")
    status = response.get("status") if isinstance(response, dict) else None
    state = status.get("state") if isinstance(status, dict) else None
    if state in FAILED_STATES:
        return f"{state}: {final_text(event) or 'no reason given'}"
    return None


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "\u2026"


def client_factory(http: httpx.AsyncClient) -> ClientFactory:
    """An A2A client factory over ``http`` (timeouts, ``A2A-Version``, optional token)."""
    return ClientFactory(
        ClientConfig(
            streaming=True,
            httpx_client=http,
            supported_protocol_bindings=["JSONRPC", "HTTP+JSON"],
        )
    )


async def run(
    question: str, *, registry_url: str, collection: str, k: int, rounds: int
) -> tuple[str, dict[str, Any]]:
    """Find the agents through the registry and run the workflow once."""
    settings = CommonSettings()
    async with http_client(
        connect_timeout_s=settings.connect_timeout_s,
        request_timeout_s=300.0,
        headers=settings.auth_headers(),
    ) as http:
        cards = await discover(registry_url, http)
        workflow = build_workflow(
            cards, collection=collection, k=k, rounds=rounds, client_factory=client_factory(http)
        )

        def show(event: Event) -> None:
            if event.author in ("retrieve", "write", "critique", "verdict"):
                delta = event.actions.state_delta
                changed = ", ".join(sorted(k for k, v in delta.items() if v is not None))
                verdict = " (accept)" if event.actions.escalate else ""
                print(f"{event.author}: {changed}{verdict}", file=sys.stderr)

        return await ask(workflow, question, on_event=show)


def main(argv: list[str] | None = None) -> int:
    """``python -m scriptorium.examples.adk_workflow QUESTION [--registry-url URL] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("question")
    parser.add_argument("--registry-url", default=CommonSettings().resolved_registry_url)
    parser.add_argument("--collection", default="default")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="the loop's max_iterations")
    args = parser.parse_args(argv)
    os.environ.setdefault("ADK_SUPPRESS_A2A_EXPERIMENTAL_FEATURE_WARNINGS", "true")
    try:
        text, state = asyncio.run(
            run(
                args.question,
                registry_url=args.registry_url,
                collection=args.collection,
                k=args.k,
                rounds=args.rounds,
            )
        )
    except (StepFailed, RegistryError, CardError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(text)
    verdict = Critique.model_validate(state[CRITIQUE]).verdict
    print(f"\ncritic: {verdict} after {state[ROUNDS]} round(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
