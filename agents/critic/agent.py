"""The critic: skill ``critique`` checks every sentence of a draft against the passages.

Support comes from the grounding model shared with the writer (sentence-level MiniLM
similarity, overlap, entity/number and negation features, combined by a random forest
trained by ``scriptorium critic train``), or, with ``SCRIPTORIUM_CRITIC_JUDGE=llm``, from
the model served by the inference agent bound in the session (for a capable checker on a
GPU). Both produce the same :class:`~protocol.payloads.Critique`.

Its verdicts become ``gen_ai.evaluation.result`` events on the critique's span: one per
sentence (``sentence_support``), one for the coverage of the question, one for the draft.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from opentelemetry import trace
from pydantic import Field

from agents.common.grounding.grounder import Support
from agents.common.service import GroundedAgent
from agents.common.settings import EmbeddingSettings
from agents.critic.judge import judge_supports
from agents.critic.metrics import record_critique
from agents.critic.review import draft_sentences, review
from agents.scaffold.app import AgentParts
from agents.scaffold.executor import SkillCall
from agents.scaffold.settings import AgentSettings
from protocol import telemetry
from protocol.cards import CardSpec, Skill
from protocol.payloads import Critique, CritiqueRequest

CARD = CardSpec(
    name="critic",
    description=(
        "Checks each sentence of a draft against the passages it cites, citation validity "
        "and the question's coverage; returns a verdict with actionable feedback."
    ),
    capacity=8,
    skills=[
        Skill(
            id="critique",
            name="Critique a draft",
            description="CritiqueRequest -> Critique: per-sentence verdict (supported, "
            "unsupported, uncited, bad_citation), support score, best passage and span; "
            "coverage of the question; accept or revise with feedback.",
            tags=["verification", "grounding", "citations"],
            examples=['{"question": "...", "draft": {"text": "..."}, "passages": [...]}'],
            input_modes=("application/json",),
            output_modes=("application/json",),
        )
    ],
    primary_skill="critique",
)
CRITIQUE_ARTIFACT = "critique"


class CriticSettings(EmbeddingSettings):
    """The critic's settings (prefix ``SCRIPTORIUM_``)."""

    critic_judge: Literal["forest", "llm"] = Field(
        default="forest",
        description="forest: the trained grounding model; llm: ask the model served by the "
        "inference agent (use with a capable checker model, e.g. on a GPU).",
    )


class Critic(GroundedAgent):
    """The critique skill over the grounding model."""

    name = "critic"

    def __init__(self, settings: CriticSettings) -> None:
        super().__init__(settings)
        self.settings: CriticSettings = settings

    async def critique(self, call: SkillCall) -> None:
        request = call.parse(CritiqueRequest)
        grounder = self.grounder
        sentences = draft_sentences(request.draft)
        passages = [p.text for p in request.passages]
        supports: list[list[Support]] = [[] for _ in sentences]
        if sentences and passages:
            supports = await asyncio.to_thread(
                grounder.support, [s.text for s in sentences], passages, request.question
            )
        coverage = await asyncio.to_thread(grounder.coverage, request.question, passages)
        answer_type_given = True
        if coverage.answer_type and not request.draft.abstained:
            given = await asyncio.to_thread(
                grounder.coverage, request.question, [request.draft.text]
            )
            answer_type_given = given.answer_type_found
        addresses = request.draft.abstained or await asyncio.to_thread(
            grounder.addresses, request.question, request.draft.text
        )
        threshold = grounder.threshold
        if self.settings.critic_judge == "llm" and sentences:
            supports = await judge_supports(
                self.peers, call.context_id, sentences, passages, supports
            )
            threshold = 0.5
        result = review(
            request.draft,
            sentences,
            supports,
            coverage,
            threshold,
            answer_type_given=answer_type_given,
            addresses_question=addresses,
            judge=self.settings.critic_judge,
        )
        record_critique(result)
        trace_verdicts(result)
        await call.emit(result, name=CRITIQUE_ARTIFACT)


def trace_verdicts(critique: Critique) -> None:
    """The critique as ``gen_ai.evaluation.result`` events on the active span."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    for check in critique.sentences:
        telemetry.record_evaluation(
            span,
            "sentence_support",
            score=check.support,
            label=check.verdict,
            explanation=check.feedback,
            **{"scriptorium.sentence.index": check.index},
        )
    coverage = critique.coverage
    telemetry.record_evaluation(
        span,
        "coverage",
        score=1.0 if coverage.covered else 0.0,
        label="covered" if coverage.covered else "not_covered",
        explanation=", ".join(coverage.missing_terms),
    )
    supported = sum(check.verdict == "supported" for check in critique.sentences)
    telemetry.record_evaluation(
        span,
        "critique",
        score=supported / len(critique.sentences) if critique.sentences else 0.0,
        label=critique.verdict,
        explanation=" ".join(critique.feedback),
        **{"scriptorium.critic.judge": critique.judge},
    )


def parts(settings: CriticSettings) -> AgentParts:
    """The critic's parts for explicit settings."""
    critic = Critic(settings)
    return AgentParts(card=CARD, handlers={"critique": critic.critique}, lifespan=critic.lifespan)


def build(settings: AgentSettings) -> AgentParts:
    """The critic's parts, configured from the environment."""
    return parts(CriticSettings(**settings.model_dump(exclude_unset=True)))
