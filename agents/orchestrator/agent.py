"""The orchestrator's card and skills."""

from __future__ import annotations

from agents.scaffold.app import AgentParts
from agents.scaffold.executor import not_built
from agents.scaffold.settings import AgentSettings
from protocol.cards import CardSpec, Skill

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
            description="A grounded answer whose sentences cite passages as [n], critic-checked.",
            tags=["question-answering", "rag", "citations"],
            examples=["What happens to a session when one of its agents dies?"],
        )
    ],
)


def build(settings: AgentSettings) -> AgentParts:
    """The orchestrator's parts."""
    return AgentParts(card=CARD, handlers={"answer": not_built("the orchestration issue")})
