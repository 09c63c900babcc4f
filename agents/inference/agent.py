"""The inference agent's card and skills."""

from __future__ import annotations

from agents.scaffold.app import AgentParts
from agents.scaffold.executor import not_built
from agents.scaffold.settings import AgentSettings
from protocol.cards import CardSpec, Skill

CARD = CardSpec(
    name="inference",
    description="Serves the language model through vLLM with continuous batching and streaming.",
    capacity=64,
    skills=[
        Skill(
            id="generate",
            name="Generate",
            description="Chat messages and sampling parameters -> streamed tokens, text and usage.",
            tags=["llm", "generation", "vllm", "streaming"],
            examples=['{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 64}'],
        )
    ],
)


def build(settings: AgentSettings) -> AgentParts:
    """The inference agent's parts."""
    return AgentParts(
        card=CARD, handlers={"generate": not_built("issue #4 (vLLM inference agent)")}
    )
