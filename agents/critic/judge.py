"""LLM-judge mode: the model served by the inference agent decides support, yes or no.

Off by default (SmolLM2-135M is no judge); meant for a capable checker (a MiniCheck-class
model served by vLLM on a GPU). Only the passages a sentence cites, and the one the forest
ranks best, are put to the model; every other score stays the forest's.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from agents.common.grounding.grounder import Support
from agents.scaffold.peers import Peers
from protocol.payloads import ChatMessage, DraftSentence, GenerateRequest, Generation

PROMPT = (
    "Passage:\n{passage}\n\nClaim: {claim}\n\n"
    "Is every part of the claim stated by the passage? Answer Yes or No."
)


async def judge_supports(
    peers: Peers,
    session_id: str,
    sentences: Sequence[DraftSentence],
    passages: Sequence[str],
    forest: Sequence[Sequence[Support]],
) -> list[list[Support]]:
    """The forest's rows with the judged entries replaced by the model's 1.0 / 0.0."""
    team = await peers.join(session_id)
    rows = [list(row) for row in forest]
    wanted = sorted(
        {
            (i, n - 1)
            for i, sentence in enumerate(sentences)
            for n in sentence.citations
            if 1 <= n <= len(passages)
        }
        | {(i, max(row, key=lambda s: s.score).passage) for i, row in enumerate(rows) if row}
    )

    async def ask(i: int, p: int) -> None:
        request = GenerateRequest(
            messages=[
                ChatMessage(
                    role="user",
                    content=PROMPT.format(passage=passages[p], claim=sentences[i].text),
                )
            ],
            max_tokens=3,
        )
        if team is not None and "inference" in team.session.roles:
            answer = await team.call("inference", request, result=Generation)
        else:
            answer = await peers.call("generate", request, result=Generation)
        verdict = 1.0 if answer.text.strip().lower().startswith("yes") else 0.0
        rows[i][p] = dataclasses.replace(rows[i][p], score=verdict)

    await asyncio.gather(*(ask(i, p) for i, p in wanted))
    return rows
