"""The session viewer at ``/ui``, in a real browser (headless Chromium through Playwright).

Recorded sessions are listed with their question, shown as swimlanes (one lane per agent
instance) and steps in log order, with the answer, its citations highlighted in their
passages and the critic's verdict per sentence; a live session is followed as it happens.
Every string from a log appears as text, never as markup.

Needs Debian's chromium at /usr/bin/chromium (``make browser``). Set
``SCRIPTORIUM_UI_SCREENSHOTS=DIR`` to keep a screenshot of each page in DIR.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Dialog, Page, ViewportSize, async_playwright, expect
from pydantic import SecretStr

from protocol.http import running
from protocol.payloads import (
    Answer,
    AnswerCitation,
    AnswerRequest,
    AnswerSentence,
    ChatMessage,
    Coverage,
    Critique,
    CritiqueRequest,
    Draft,
    DraftSentence,
    GenerateRequest,
    Generation,
    Passage,
    SearchRequest,
    SearchResult,
    SentenceVerdict,
    Usage,
    WriteRequest,
)
from registry import Registry, RegistrySettings, Session, SessionBroker, SessionLog
from registry.api import create_app
from scriptorium.launcher import Stack
from scriptorium.testing import ROUND_STEPS
from tests.registry.conftest import AddAgent

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 15_000
VIEWPORT: ViewportSize = {"width": 1480, "height": 1180}
HOSTILE = "<img src=x onerror=alert(1)>"
ROLES = {"retriever": "search", "writer": "write", "critic": "critique", "inference": "generate"}
SPUTNIK = (
    "Sputnik 1 was the first artificial Earth satellite.   The Soviet Union launched it into "
    "an elliptical low Earth orbit on 4 October 1957."
)
VOSTOK = (
    "Vostok 1 was the first spaceflight of the Vostok programme and the first human "
    "orbital spaceflight, carrying Yuri Gagarin in 1961."
)


# --- browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A page that fails the test on a script error, a console error or any dialog.

    Name it after the server's fixture in a test's arguments, so that the page closes first
    (a server stopping under an open event stream is a console error).
    """
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    problems: list[str] = []

    async def on_dialog(dialog: Dialog) -> None:
        problems.append(f"a dialog opened: {dialog.message!r}")
        await dialog.dismiss()

    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on(
        "console",
        lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    page.on("dialog", on_dialog)
    try:
        yield page
        await snapshot(page, request.node.name)
    finally:
        await context.close()
    assert not problems, problems


async def snapshot(page: Page, name: str) -> None:
    """A screenshot in $SCRIPTORIUM_UI_SCREENSHOTS, when set."""
    folder = os.environ.get("SCRIPTORIUM_UI_SCREENSHOTS")
    if folder:
        # The page scrolls inside <main>: grow the window to show all of it.
        height = await page.evaluate("document.querySelector('main').scrollHeight + 40")
        await page.set_viewport_size({"width": 1480, "height": max(1180, min(height, 4000))})
        await page.screenshot(path=Path(folder) / f"ui-{name}.png")
        await page.set_viewport_size(VIEWPORT)


# --- a session recorded through SessionLog --------------------------------------------------

Step = Callable[..., Awaitable[None]]


def stepper(log: SessionLog, session: Session) -> Step:
    async def step(
        kind: str,
        sender: str,
        recipient: str,
        payload: dict[str, Any] | None = None,
        summary: str | None = None,
    ) -> None:
        await asyncio.sleep(0.02)  # spread the steps in time as a real session does
        await log.append(
            session.id,
            sender=sender,
            recipient=recipient,
            kind=kind,
            payload=payload,
            summary=summary,
        )

    return step


def dump(model: Any, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = model.model_dump(mode="json")
    return {**body, **extra}


PASSAGES = [
    Passage(
        chunk_id="sputnik-0",
        document_id="wiki/Sputnik 1",
        source="wikipedia:Sputnik 1",
        text=SPUTNIK,
        score=0.91,
    ),
    Passage(
        chunk_id="vostok-0",
        document_id="wiki/Vostok 1",
        source=f"upload:{HOSTILE}.txt",
        text=VOSTOK,
        score=0.55,
    ),
    Passage(
        chunk_id="explorer-0",
        document_id="wiki/Explorer 1",
        source="wikipedia:Explorer 1",
        text="Explorer 1 was the first satellite launched by the United States, in 1958.",
        score=0.31,
    ),
]
SENTENCES = [
    DraftSentence(
        text="The Soviet Union launched Sputnik 1 on 4 October 1957.",
        citations=[1],
        origin="model",
    ),
    DraftSentence(text=f"It carried {HOSTILE} into orbit.", citations=[2], origin="attached"),
]
QUESTION = f"When was the first artificial satellite launched? {HOSTILE}"


def critique(verdict: str) -> Critique:
    return Critique(
        verdict="accept" if verdict == "accept" else "revise",
        sentences=[
            SentenceVerdict(
                index=0,
                sentence=SENTENCES[0].text,
                citations=[1],
                verdict="supported",
                support=0.93,
                best_passage=1,
                best_support=0.93,
                best_span="The Soviet Union launched it into an elliptical low Earth orbit on "
                "4 October 1957.",
            ),
            SentenceVerdict(
                index=1,
                sentence=SENTENCES[1].text,
                citations=[2],
                verdict="unsupported",
                support=0.12,
                best_passage=2,
                best_support=0.12,
            ),
        ],
        feedback=["sentence 2: [2] says nothing of it"],
        coverage=Coverage(covered=True),
    )


async def record_answer(
    broker: SessionBroker, log: SessionLog, *, final: Callable[[Session], dict[str, Any]]
) -> tuple[Session, list[str]]:
    """A two-round answer as the orchestrator logs it; ``final`` is answer.result's payload."""
    session = await broker.negotiate(ROLES)
    step = stepper(log, session)
    bound = session.bindings
    request = AnswerRequest(question=QUESTION, collection="space", k=3)
    await step("answer.request", "orchestrator", "orchestrator", dump(request))
    await step(
        "search.request",
        "orchestrator",
        bound["retriever"],
        dump(SearchRequest(query=QUESTION, k=3, collection="space")),
    )
    await step(
        "search.result",
        "orchestrator",
        bound["retriever"],
        dump(SearchResult(query=QUESTION, passages=PASSAGES), ms=38.2),
    )
    for verdict in ("revise", "accept"):
        draft = Draft(text="", sentences=SENTENCES, engine_ms=210.0)
        write = WriteRequest(question=QUESTION, passages=PASSAGES)
        await step("write.request", "orchestrator", bound["writer"], dump(write))
        generate = GenerateRequest(messages=[ChatMessage(role="user", content=QUESTION)])
        await step("generate.request", "writer", bound["inference"], dump(generate))
        usage = Usage(prompt_tokens=300, completion_tokens=41, ttft_ms=30, duration_ms=210)
        generation = Generation(text="The Soviet Union ...", model="smollm2", usage=usage)
        await step("generate.result", "writer", bound["inference"], dump(generation, ms=212.5))
        await step("write.result", "orchestrator", bound["writer"], dump(draft, ms=260.0))
        check = CritiqueRequest(question=QUESTION, draft=draft, passages=PASSAGES)
        await step("critique.request", "orchestrator", bound["critic"], dump(check))
        await step(
            "critique.result", "orchestrator", bound["critic"], dump(critique(verdict), ms=45)
        )
    await step("answer.result", "orchestrator", "orchestrator", final(session))
    await broker.release(session.id)
    events = await log.read(session.id)
    return session, [event.kind for event in events]


def full_answer(session: Session) -> dict[str, Any]:
    """answer.result as the orchestrator now logs it: the Answer without its history."""
    checks = critique("accept").sentences
    answer = Answer(
        question=QUESTION,
        text="The Soviet Union launched Sputnik 1 on 4 October 1957. [1] "
        f"It carried {HOSTILE} into orbit. [2] [unsupported]",
        sentences=[
            AnswerSentence(
                text=sentence.text,
                citations=[
                    AnswerCitation(
                        passage=n,
                        chunk_id=PASSAGES[n - 1].chunk_id,
                        document_id=PASSAGES[n - 1].document_id,
                        source=PASSAGES[n - 1].source,
                        snippet=check.best_span or " ".join(PASSAGES[n - 1].text.split())[:240],
                        support=check.support,
                        origin=sentence.origin or "model",
                    )
                    for n in sentence.citations
                ],
                verdict=check.verdict,
                support=check.support,
                unsupported=check.verdict != "supported",
            )
            for sentence, check in zip(SENTENCES, checks, strict=True)
        ],
        passages=PASSAGES,
        verdict="accept",
        rounds=2,
        session_id=session.id,
        timings_ms={"total": 1234.5, "engine": 420.0},
    )
    return answer.model_dump(mode="json", exclude={"history"})


def legacy_answer(_: Session) -> dict[str, Any]:
    """answer.result as older orchestrators logged it (no sentences, no passages)."""
    return {"text": "The Soviet Union [1].", "verdict": "accept", "rounds": 2}


async def register_team(add_agent: AddAgent) -> None:
    for port, (role, skill) in enumerate(ROLES.items(), start=9301):
        await add_agent(role, port, [(skill, (role,))], capacity=4)


@pytest.fixture
def settings(settings: RegistrySettings) -> RegistrySettings:
    """The registry tests' settings, with agents that stay healthy without heartbeats."""
    return settings.model_copy(update={"heartbeat_interval_s": 30.0, "heartbeat_ttl_s": 90.0})


@pytest.fixture
async def registry_url(redis: aioredis.Redis, settings: RegistrySettings) -> AsyncIterator[str]:
    async with running(create_app(settings, redis=redis)) as url:
        yield url


# --- the viewer, driven like a user ---------------------------------------------------------


def row(page: Page, session_id: str) -> Any:
    return page.locator(f'#sessions li[data-session="{session_id}"]')


async def open_session(page: Page, url: str, session_id: str) -> None:
    await page.goto(f"{url}/ui")
    await row(page, session_id).locator("a").click()
    await expect(page.locator("#session-header .sid")).to_have_text(session_id, timeout=WAIT_MS)


async def lane_keys(page: Page) -> list[str]:
    keys: list[str] = await page.locator(".lane-label").evaluate_all(
        "els => els.map(e => e.dataset.lane)"
    )
    return keys


async def step_kinds(page: Page) -> list[str]:
    kinds: list[str] = await page.locator("#steps tr.step").evaluate_all(
        "rows => rows.map(r => r.dataset.kind)"
    )
    return kinds


async def marks(page: Page) -> list[tuple[int, float]]:
    """(seq, x) of every mark on the timeline."""
    found: list[list[float]] = await page.locator(".plot .mark").evaluate_all(
        "els => els.map(e => [Number(e.dataset.seq), e.transform.baseVal[0].matrix.e])"
    )
    return [(int(seq), x) for seq, x in found]


async def test_static_files_are_served_with_types_and_cache_headers(registry_url: str) -> None:
    async with httpx.AsyncClient(base_url=registry_url, timeout=10) as http:
        for path, kind in (
            ("/ui", "text/html"),
            ("/ui/", "text/html"),
            ("/ui/index.html", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/style.css", "text/css"),
        ):
            response = await http.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith(kind), path
            assert response.headers["cache-control"] == "no-cache"
            assert "script-src 'self'" in response.headers["content-security-policy"]
            again = await http.get(path, headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304
        assert 'src="/ui/app.js"' in (await http.get("/ui")).text
        assert (await http.get("/ui/nothing.js")).status_code == 404
        assert "/ui" not in (await http.get("/openapi.json")).json()["paths"]


async def test_a_recorded_session_is_listed_and_shown_with_its_answer(
    registry_url: str,
    page: Page,
    registry: Registry,
    session_log: SessionLog,
    add_agent: AddAgent,
) -> None:
    await register_team(add_agent)
    session, kinds = await record_answer(registry.sessions, session_log, final=full_answer)

    await page.goto(f"{registry_url}/ui")
    listed = row(page, session.id)
    await expect(listed.locator(".q")).to_have_text(QUESTION, timeout=WAIT_MS)
    await expect(listed.locator(".outcome")).to_have_text("accept · 2 rounds")
    await listed.locator("a").click()

    header = page.locator("#session-header")
    await expect(header.locator(".sid")).to_have_text(session.id, timeout=WAIT_MS)
    await expect(header.locator("#trace-id")).to_have_text(session.trace_id)
    await expect(header.locator(".badge")).to_have_text("released")
    await expect(page.locator("#question")).to_have_text(QUESTION)

    # one lane per participant: the registry, the orchestrator, each bound instance
    bound = session.bindings
    expected = [bound[role] for role in ("retriever", "writer", "inference", "critic")]
    assert await lane_keys(page) == ["registry", "orchestrator", *expected]
    # steps in log order; each event one mark, placed left to right in time
    await expect(page.locator("#steps tr.step")).to_have_count(len(kinds))
    assert await step_kinds(page) == kinds
    placed = await marks(page)
    assert sorted(seq for seq, _ in placed) == list(range(1, len(kinds) + 1))
    xs = [x for _, x in sorted(placed)]
    assert xs == sorted(xs)
    # a bar for each request, to its result: answer, search, 2 x (write, generate, critique)
    bars = page.locator(".plot .bar.status-result")
    await expect(bars).to_have_count(1 + 1 + 2 * 3)
    assert await page.locator(".plot .bar:not(.status-result)").count() == 0

    # the answer: the critic's verdict per sentence, citations highlighted in their passages
    sentences = page.locator("#sentences .sentence")
    await expect(sentences).to_have_count(2)
    verdicts = await sentences.evaluate_all("els => els.map(e => e.dataset.verdict)")
    assert verdicts == ["supported", "unsupported"]
    await expect(sentences.nth(1).locator(".text")).to_contain_text(f"It carried {HOSTILE}")
    await expect(sentences.locator(".cite")).to_have_text(["[1]", "[2]"])
    await expect(page.locator("#answer-verdict")).to_have_text("accept")
    await expect(page.locator("#passage-1 mark")).to_have_text(
        "The Soviet Union launched it into an elliptical low Earth orbit on 4 October 1957."
    )
    await expect(page.locator("#passage-2 mark")).to_have_text(VOSTOK)
    await expect(page.locator("#passage-2 .source")).to_have_text(f"upload:{HOSTILE}.txt")
    assert await page.locator("#passage-3 mark").count() == 0
    await expect(page.locator("#passage-3")).to_have_class(re.compile(r"\buncited\b"))

    # a step opens to its payload
    search = page.locator('#steps tr.step[data-kind="search.result"]')
    await search.click()
    await expect(page.locator("#steps tr.details pre")).to_contain_text('"chunk_id": "vostok-0"')

    # nothing from the log became markup
    assert await page.locator("img").count() == 0
    assert await page.locator("main mark").count() == 2


async def test_older_and_truncated_logs_still_render(
    registry_url: str,
    page: Page,
    registry: Registry,
    session_log: SessionLog,
    settings: RegistrySettings,
    add_agent: AddAgent,
) -> None:
    await register_team(add_agent)
    session, _ = await record_answer(registry.sessions, session_log, final=legacy_answer)
    other = await registry.sessions.negotiate({"retriever": "search"})
    huge = {"passages": [{"text": "x" * (settings.max_event_payload_bytes + 10)}]}
    await session_log.append(
        other.id,
        sender="orchestrator",
        recipient=other.bindings["retriever"],
        kind="search.result",
        payload=huge,
    )
    await session_log.append(
        other.id,
        sender="orchestrator",
        recipient=other.bindings["retriever"],
        kind="write.failed",
        summary=f"the writer failed: {HOSTILE}",
    )
    await registry.sessions.release(other.id)

    await open_session(page, registry_url, session.id)
    await expect(page.locator("#answer .note")).to_contain_text("from the last draft")
    verdicts = page.locator("#sentences .sentence")
    await expect(verdicts).to_have_count(2)
    assert await verdicts.evaluate_all("els => els.map(e => e.dataset.verdict)") == [
        "supported",
        "unsupported",
    ]
    await expect(page.locator("#passage-1 mark")).to_have_count(1)

    await row(page, other.id).locator("a").click()
    await expect(page.locator("#session-header .sid")).to_have_text(other.id, timeout=WAIT_MS)
    truncated = page.locator('#steps tr.step[data-kind="search.result"]')
    await expect(truncated.locator(".flag")).to_have_text("truncated")
    await expect(page.locator("#answer .failure")).to_have_text(
        f"write.failed the writer failed: {HOSTILE}"
    )
    await expect(row(page, other.id).locator(".outcome")).to_have_text("write.failed")
    assert await page.locator("img").count() == 0


async def follow_live(
    page: Page, url: str, broker: SessionBroker, log: SessionLog, *, fragment: str = ""
) -> None:
    """Open the viewer, then start a session and log steps while the page watches."""
    await page.goto(f"{url}/ui{fragment}")
    await expect(page.locator("#registry-status")).to_have_class(
        re.compile(r"\bok\b"), timeout=WAIT_MS
    )
    session = await broker.negotiate({"retriever": "search"})
    retriever = session.bindings["retriever"]
    question = f"live question {uuid.uuid4().hex[:6]} {HOSTILE}"
    listed = row(page, session.id)  # the list refreshes on the registry's change feed
    await expect(listed).to_be_visible(timeout=WAIT_MS)
    await listed.locator("a").click()
    await expect(page.locator("#session-header .live")).to_be_visible(timeout=WAIT_MS)
    steps = page.locator("#steps tr.step")
    await expect(steps).to_have_count(1, timeout=WAIT_MS)  # session.opened

    await log.append(
        session.id,
        sender="orchestrator",
        recipient="orchestrator",
        kind="answer.request",
        payload={"question": question},
    )
    await expect(page.locator("#question")).to_have_text(question, timeout=WAIT_MS)
    await log.append(
        session.id,
        sender="orchestrator",
        recipient=retriever,
        kind="search.request",
        payload={"query": question, "k": 3},
    )
    await expect(page.locator(".plot .bar.skill-search.status-open")).to_have_count(
        1, timeout=WAIT_MS
    )
    await expect(page.locator(".plot .bar.skill-answer.status-open")).to_have_count(1)
    await log.append(
        session.id,
        sender="orchestrator",
        recipient=retriever,
        kind="search.result",
        payload={"query": question, "passages": [], "ms": 12.0},
    )
    await log.append(
        session.id,
        sender="orchestrator",
        recipient="orchestrator",
        kind="answer.result",
        payload={"text": "Nothing found.", "verdict": "revise", "rounds": 1, "abstained": True},
    )
    await expect(steps).to_have_count(5, timeout=WAIT_MS)
    await expect(page.locator(".plot .bar.status-result")).to_have_count(2)
    await broker.release(session.id)
    await expect(steps).to_have_count(6, timeout=WAIT_MS)
    await expect(page.locator("#session-header .live")).to_have_count(0, timeout=WAIT_MS)
    await expect(page.locator("#session-header .badge")).to_have_text("released")
    assert await step_kinds(page) == [
        "session.opened",
        "answer.request",
        "search.request",
        "search.result",
        "answer.result",
        "session.released",
    ]
    await expect(listed.locator(".q")).to_have_text(question, timeout=WAIT_MS)


async def test_a_live_session_is_followed_as_it_happens(
    registry_url: str,
    page: Page,
    registry: Registry,
    session_log: SessionLog,
    add_agent: AddAgent,
) -> None:
    await register_team(add_agent)
    await follow_live(page, registry_url, registry.sessions, session_log)


async def test_auth_the_viewer_follows_a_registry_with_a_token_from_its_address(
    redis: aioredis.Redis,
    settings: RegistrySettings,
    page: Page,
    registry: Registry,
    session_log: SessionLog,
    add_agent: AddAgent,
) -> None:
    token = "viewer-" + uuid.uuid4().hex
    guarded = settings.model_copy(update={"token": SecretStr(token)})
    await register_team(add_agent)
    async with running(create_app(guarded, redis=redis)) as url:
        async with httpx.AsyncClient() as http:  # the streams really are guarded
            assert (await http.get(f"{url}/changes")).status_code == 401
        await follow_live(page, url, registry.sessions, session_log, fragment=f"#token={token}")
        assert "token" not in page.url, "the token is taken out of the address bar"
        await page.goto("about:blank")  # close the page's streams before the server stops


# --- a real answer through the whole stack ---------------------------------------------------


@pytest.fixture(scope="module")
async def asked(stack: Stack) -> Answer:
    """A question answered by the real stack over a few ingested documents."""
    from scriptorium.corpora import DEMO_QUESTIONS
    from scriptorium.testing import PLANTED, answer, corpus, ingest

    wanted = {"wiki/Sputnik 1", "wiki/Yuri Gagarin", "wiki/Apollo 11", PLANTED.id}
    documents = [document for document in corpus() if document.id in wanted]
    assert len(documents) == len(wanted)
    collection = f"ui_{uuid.uuid4().hex[:8]}"
    await ingest(stack.registry_url, collection, documents)
    return await answer(stack, collection, DEMO_QUESTIONS[0])


@pytest.mark.slow
async def test_a_real_answer_is_shown_and_a_live_session_followed(
    stack: Stack, asked: Answer, page: Page
) -> None:
    url = stack.registry_url
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        session = Session.model_validate((await http.get(f"/sessions/{asked.session_id}")).json())

    await page.goto(f"{url}/ui")
    listed = row(page, session.id)
    await expect(listed.locator(".q")).to_have_text(asked.question, timeout=WAIT_MS)
    await listed.locator("a").click()
    await expect(page.locator("#trace-id")).to_have_text(session.trace_id, timeout=WAIT_MS)

    lanes = await lane_keys(page)
    assert lanes[:2] == ["registry", "orchestrator"]
    assert set(lanes) >= set(session.bindings.values())
    kinds = await step_kinds(page)
    # every step is there, each first seen in the order of a round; the session closes last
    assert [kinds.index(kind) for kind in ROUND_STEPS] == sorted(
        kinds.index(kind) for kind in ROUND_STEPS
    )
    assert kinds[-2:] == ["answer.result", "session.released"]
    placed = await marks(page)
    xs = [x for _, x in sorted(placed)]
    assert len(placed) == len(kinds)
    assert xs == sorted(xs)
    await expect(page.locator(".plot .bar.status-result").first).to_be_visible()

    sentences = page.locator("#sentences .sentence")
    await expect(sentences).to_have_count(len(asked.sentences))
    verdicts = await sentences.evaluate_all("els => els.map(e => e.dataset.verdict)")
    assert verdicts == [s.verdict for s in asked.sentences]
    cites = [f"[{c.passage}]" for s in asked.sentences for c in s.citations]
    await expect(sentences.locator(".cite")).to_have_text(cites)
    for number in {c.passage for s in asked.sentences for c in s.citations}:
        await expect(page.locator(f"#passage-{number}")).to_have_class(re.compile(r"\bcited\b"))
        assert await page.locator(f"#passage-{number} mark").count() >= 1, number
    await snapshot(page, "real-answer")

    # a session of the stack's registry, logged to while the page follows it
    assert stack.redis_url, "the stack runs on a Redis"
    settings = RegistrySettings(redis_url=stack.redis_url, redis_prefix=stack.settings.redis_prefix)
    client = aioredis.from_url(stack.redis_url)
    try:
        broker = SessionBroker(client, settings)
        await follow_live(page, url, broker, SessionLog(client, settings))
    finally:
        await client.aclose()
