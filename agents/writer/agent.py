"""The writer's card and skills."""

from __future__ import annotations

from agents.scaffold.app import AgentParts
from agents.scaffold.executor import not_built
from agents.scaffold.settings import AgentSettings
from protocol.cards import CardSpec, Skill

CARD = CardSpec(
    name="writer",
    description="Drafts answers from retrieved passages, citing them as [n]; revises on feedback.",
    capacity=8,
    skills=[
        Skill(
            id="write",
            name="Write or revise a cited answer",
            description="Draft from passages, or revise a previous draft given feedback.",
            tags=["generation", "citations", "writing"],
            examples=['{"question": "...", "passages": [...], "feedback": []}'],
        )
    ],
)


def build(settings: AgentSettings) -> AgentParts:
    """The writer's parts."""
    return AgentParts(card=CARD, handlers={"write": not_built("the writer issue")})
