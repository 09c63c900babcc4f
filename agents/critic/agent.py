"""The critic's card and skills."""

from __future__ import annotations

from agents.scaffold.app import AgentParts
from agents.scaffold.executor import not_built
from agents.scaffold.settings import AgentSettings
from protocol.cards import CardSpec, Skill

CARD = CardSpec(
    name="critic",
    description=(
        "Checks each sentence of a draft against the passages it cites, citation validity "
        "and relevance; returns a verdict with actionable feedback."
    ),
    capacity=8,
    skills=[
        Skill(
            id="critique",
            name="Critique a draft",
            description="Per-sentence support check and a verdict: accept or revise.",
            tags=["verification", "grounding", "citations"],
            examples=['{"question": "...", "draft": {"text": "..."}, "passages": [...]}'],
        )
    ],
)


def build(settings: AgentSettings) -> AgentParts:
    """The critic's parts."""
    return AgentParts(card=CARD, handlers={"critique": not_built("the critic issue")})
