"""The answer loop with scripted peers: round limit, honest fallbacks, corrective retrieval."""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.orchestrator.loop import Critiqued, Done, Drafted, Retrieved, answer_rounds
from protocol.payloads import (
    AnswerRequest,
    Coverage,
    Critique,
    CritiqueRequest,
    Draft,
    DraftSentence,
    Passage,
    SearchRequest,
    WriteRequest,
)


def passage(n: int, text: str) -> Passage:
    return Passage(chunk_id=f"c{n}", document_id=f"d{n}", source=f"s{n}", text=text, score=1.0)


@dataclass
class ScriptedTeam:
    """Peers whose answers are scripted per call; records every request it gets."""

    verdicts: list[str]
    covered: list[bool] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    results: dict[str, list[Passage]] = field(default_factory=dict)
    searches: list[str] = field(default_factory=list)
    writes: list[WriteRequest] = field(default_factory=list)

    async def search(self, request: SearchRequest) -> list[Passage]:
        self.searches.append(request.query)
        return self.results.get(request.query, self.results.get("*", []))

    async def write(self, request: WriteRequest, round_number: int) -> Draft:
        self.writes.append(request)
        sentence = DraftSentence(text=f"{request.mode} {round_number}.", citations=[1])
        return Draft(
            text=sentence.text,
            sentences=[sentence],
            extractive=request.mode == "extractive",
            abstained=request.mode == "abstain",
        )

    async def critique(self, request: CritiqueRequest) -> Critique:
        index = min(len(self.writes), len(self.verdicts)) - 1
        covered = self.covered[index] if index < len(self.covered) else True
        return Critique(
            verdict="accept" if self.verdicts[index] == "accept" else "revise",
            coverage=Coverage(covered=covered, missing_terms=[] if covered else self.missing),
        )


async def run(request: AnswerRequest, team: ScriptedTeam) -> list[object]:
    return [event async for event in answer_rounds(request, team)]


async def test_accepted_first_round_stops_at_once() -> None:
    team = ScriptedTeam(verdicts=["accept"], results={"*": [passage(1, "Paris is in France.")]})
    events = await run(AnswerRequest(question="Where is Paris?"), team)
    assert [type(e) for e in events] == [Retrieved, Drafted, Critiqued, Done]
    done = events[-1]
    assert isinstance(done, Done)
    assert done.rounds == 1
    assert not done.draft.extractive
    assert len(team.writes) == 1


async def test_stops_at_round_limit_then_quotes_passages() -> None:
    team = ScriptedTeam(verdicts=["revise"] * 5, results={"*": [passage(1, "Paris.")]})
    events = await run(AnswerRequest(question="Where is Paris?", max_rounds=2), team)
    modes = [w.mode for w in team.writes]
    assert modes == ["generate", "generate", "extractive"]
    assert team.writes[1].previous is not None
    assert team.writes[1].critique is not None
    done = events[-1]
    assert isinstance(done, Done)
    assert done.rounds == 2
    assert done.draft.extractive
    assert [r.round for r in done.history] == [1, 2]


async def test_missing_coverage_rewrites_the_query_then_abstains() -> None:
    team = ScriptedTeam(
        verdicts=["revise"] * 5,
        covered=[False] * 5,
        missing=["Zanzibar"],
        results={"*": [passage(1, "Paris is in France.")]},
    )
    events = await run(AnswerRequest(question="What is the capital of Zanzibar?"), team)
    assert team.searches[0] == "What is the capital of Zanzibar?"
    assert team.searches[1].startswith("Zanzibar")  # rewritten around the missing term
    assert team.writes[-1].mode == "abstain"
    done = events[-1]
    assert isinstance(done, Done)
    assert done.draft.abstained


async def test_second_hop_searches_names_the_first_passages_mention() -> None:
    first = passage(1, "The novel Dune was written by Frank Herbert in 1965.")
    second = passage(2, "Frank Herbert was born in Tacoma, Washington.")
    team = ScriptedTeam(
        verdicts=["revise", "accept"],
        results={"Where was the author of Dune born?": [first], "*": [second]},
    )
    events = await run(AnswerRequest(question="Where was the author of Dune born?"), team)
    assert "Frank Herbert" in team.searches[1]
    retrieved = [e for e in events if isinstance(e, Retrieved)]
    assert retrieved[1].hop == "second-hop"
    assert retrieved[1].new == 1
    # Earlier passages keep their numbers; new ones come after.
    assert [p.chunk_id for p in team.writes[1].passages] == ["c1", "c2"]


async def test_empty_store_ends_without_writing() -> None:
    team = ScriptedTeam(verdicts=["accept"], results={})
    events = await run(AnswerRequest(question="Anything?"), team)
    done = events[-1]
    assert isinstance(done, Done)
    assert done.empty_store
    assert team.writes == []


async def test_round_limit_is_a_hard_stop() -> None:
    team = ScriptedTeam(verdicts=["revise"] * 20, results={"*": [passage(1, "x y z.")]})
    await run(AnswerRequest(question="Why?", max_rounds=6), team)
    assert len(team.writes) == 7  # six rounds and one fallback, never more
