"""The writer: skill ``write`` turns a question and passages into a cited draft.

``generate`` asks the inference agent bound in the caller's session (the request's
contextId) over A2A and streams its tokens on as this task's ``answer`` artifact; the
output is then grounded (:mod:`agents.writer.grounding`). ``extractive`` quotes the
best-supported passage sentences; ``abstain`` says the documents do not hold the answer
and names the closest passages.

The write's span (``invoke_agent writer``) carries the mode and, when the model wrote, the
tokens it used (``gen_ai.usage.*``) and the model that answered.
"""

from __future__ import annotations

import asyncio

from a2a.types import StreamResponse, Task
from pydantic import Field

from agents.common.service import GroundedAgent
from agents.common.settings import EmbeddingSettings
from agents.scaffold.app import AgentParts
from agents.scaffold.executor import BadRequest, SkillCall, SkillError
from agents.scaffold.settings import AgentSettings
from agents.writer import prompt
from agents.writer.grounding import ground, parse_output, render
from protocol import telemetry
from protocol.cards import CardSpec, Skill
from protocol.client import SkillFailed
from protocol.payloads import Draft, DraftSentence, GenerateRequest, Generation, WriteRequest

CARD = CardSpec(
    name="writer",
    description="Drafts answers from retrieved passages, citing them as [n]; revises on feedback.",
    capacity=8,
    skills=[
        Skill(
            id="write",
            name="Write or revise a cited answer",
            description="WriteRequest -> Draft. mode generate (revises when given the previous "
            "draft and critique), extractive (quotes passages) or abstain. Streams the "
            "model's tokens as an 'answer' artifact.",
            tags=["generation", "citations", "writing"],
            examples=['{"question": "...", "passages": [...], "mode": "generate"}'],
            input_modes=("application/json",),
            output_modes=("application/json", "text/plain"),
        )
    ],
    primary_skill="write",
)
ANSWER_ARTIFACT = "answer"
DRAFT_ARTIFACT = "draft"
EXTRACTIVE_SENTENCES = 3


class WriterSettings(EmbeddingSettings):
    """The writer's settings (prefix ``SCRIPTORIUM_``)."""

    writer_structured: bool = Field(
        default=False,
        description="Ask the engine for JSON sentences with citations instead of free text "
        "(see docs/evaluation.md for how the two compare).",
    )
    generation_timeout_s: float = Field(default=180.0, gt=0)


class Writer(GroundedAgent):
    """The write skill over a grounding model and the inference agent."""

    name = "writer"

    def __init__(self, settings: WriterSettings) -> None:
        super().__init__(settings, request_timeout_s=settings.generation_timeout_s)
        self.settings: WriterSettings = settings

    async def write(self, call: SkillCall) -> None:
        request = call.parse(WriteRequest)
        if not request.question.strip():
            raise BadRequest("empty question: say what the answer should be about")
        telemetry.annotate({"scriptorium.write.mode": request.mode})
        if request.mode == "abstain" or not request.passages:
            draft = abstain(request)
        elif request.mode == "extractive":
            draft = await self.extractive(request)
        else:
            draft = await self.generate(call, request)
        await call.emit(draft, name=DRAFT_ARTIFACT)

    async def generate(self, call: SkillCall, request: WriteRequest) -> Draft:
        """Ask the model, then check and repair what it wrote."""
        if request.previous is not None and request.critique is not None:
            messages = prompt.revision_messages(
                request.question, request.passages, request.previous, request.critique
            )
        else:
            messages = prompt.draft_messages(request.question, request.passages)
        structured = request.structured or self.settings.writer_structured
        passages = [prompt.sanitize(p.text) for p in request.passages]
        grounder = self.grounder
        # Embed the passages while the model writes: checking the draft then costs little.
        warming = asyncio.create_task(asyncio.to_thread(grounder.prepare, passages))
        generation = await self._generate(
            call,
            GenerateRequest(
                messages=messages,
                max_tokens=request.max_tokens,
                temperature=0.0,
                json_schema=prompt.DRAFT_SCHEMA if structured else None,
            ),
        )
        await warming
        telemetry.annotate(
            {
                telemetry.RESPONSE_MODEL: generation.model,
                telemetry.INPUT_TOKENS: generation.usage.prompt_tokens,
                telemetry.OUTPUT_TOKENS: generation.usage.completion_tokens,
            }
        )
        grounded = await asyncio.to_thread(
            ground,
            parse_output(generation.text, structured=structured),
            len(passages),
            lambda texts: grounder.support(texts, passages, request.question),
            grounder.threshold,
        )
        draft = (
            Draft(text=render(grounded.sentences), sentences=grounded.sentences)
            if grounded.sentences
            else abstain(request)
        )
        return draft.model_copy(
            update={
                "model": generation.model,
                "completion_tokens": generation.usage.completion_tokens,
                "engine_ms": generation.usage.duration_ms,
            }
        )

    async def _generate(self, call: SkillCall, request: GenerateRequest) -> Generation:
        """One generation on the session's inference instance, tokens streamed on."""

        async def forward(event: StreamResponse, task: Task) -> None:
            if event.HasField("artifact_update"):
                artifact = event.artifact_update.artifact
                text = "".join(part.text for part in artifact.parts if part.text)
                if artifact.name == "tokens" or (text and not artifact.name):
                    await call.stream_text(ANSWER_ARTIFACT, text, name=ANSWER_ARTIFACT)

        team = await self.peers.join(call.context_id)
        try:
            if team is not None and "inference" in team.session.roles:
                generation = await team.call(
                    "inference", request, result=Generation, on_update=forward
                )
            else:
                generation = await self.peers.call(
                    "generate", request, result=Generation, on_update=forward
                )
        except SkillFailed as exc:
            raise SkillError(f"the inference agent could not generate: {exc.reason}") from exc
        await call.stream_text(ANSWER_ARTIFACT, "", name=ANSWER_ARTIFACT, last=True)
        return generation

    async def extractive(self, request: WriteRequest) -> Draft:
        """The best-supported passage sentences, quoted with their citations."""
        passages = [prompt.sanitize(p.text) for p in request.passages]
        picks = await asyncio.to_thread(
            self.grounder.extract, request.question, passages, EXTRACTIVE_SENTENCES
        )
        quoted = " ".join(sentence for _, sentence, _ in picks)
        if not picks or not self.grounder.addresses(request.question, quoted):
            return abstain(request)
        sentences = [
            DraftSentence(
                text=f"\u201c{sentence.strip()}\u201d",
                citations=[index + 1],
                origin="extractive",
                support=round(min(1.0, max(0.0, score)), 4),
            )
            for index, sentence, score in picks
        ]
        return Draft(text=render(sentences), sentences=sentences, extractive=True)


def abstain(request: WriteRequest) -> Draft:
    """Say the documents do not hold the answer, naming the closest passages."""
    closest = [f"[{n}] {p.source}" for n, p in enumerate(request.passages[:3], start=1)]
    text = prompt.ABSTAIN_TEXT
    if closest:
        text += " The closest passages: " + "; ".join(closest) + "."
    return Draft(text=text, sentences=[], abstained=True)


def parts(settings: WriterSettings) -> AgentParts:
    """The writer's parts for explicit settings."""
    writer = Writer(settings)
    return AgentParts(card=CARD, handlers={"write": writer.write}, lifespan=writer.lifespan)


def build(settings: AgentSettings) -> AgentParts:
    """The writer's parts, configured from the environment."""
    return parts(WriterSettings(**settings.model_dump(exclude_unset=True)))
