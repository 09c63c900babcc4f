"""Shared contracts: agent cards and payloads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from protocol.cards import (
    CardError,
    CardSpec,
    Skill,
    build_agent_card,
    card_capacity,
    card_from_dict,
    card_to_dict,
    validate_card,
)
from protocol.payloads import PAYLOADS, SearchRequest, json_schemas

SPEC = CardSpec(
    name="x", description="d", capacity=4, skills=[Skill("s", "S", "does s", tags=["t"])]
)


def test_card_round_trips_through_json_and_validates() -> None:
    card = build_agent_card(SPEC, "http://127.0.0.1:9000")
    again = card_from_dict(card_to_dict(card))
    assert again == card
    validate_card(again)
    assert card_capacity(again) == 4
    bindings = {i.protocol_binding for i in again.supported_interfaces}
    assert bindings == {"JSONRPC", "HTTP+JSON"}


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.update(name=""), "name is empty"),
        (lambda d: d.update(skills=[]), "skills is empty"),
        (lambda d: d["skills"][0].update(tags=[]), "has no tags"),
        (lambda d: d["skills"].append(dict(d["skills"][0])), "appears twice"),
        (lambda d: d["supportedInterfaces"][0].update(url="ftp://x"), r"not an http\(s\) URL"),
    ],
)
def test_invalid_cards_are_refused_with_the_reason(mutate: object, reason: str) -> None:
    data = card_to_dict(build_agent_card(SPEC, "http://127.0.0.1:9000"))
    mutate(data)  # type: ignore[operator]
    with pytest.raises(CardError, match=reason):
        validate_card(card_from_dict(data))


def test_not_a_card_at_all() -> None:
    with pytest.raises(CardError, match="not an A2A"):
        card_from_dict({"name": "x", "flavour": "vanilla"})


def test_payloads_are_strict_and_have_schemas() -> None:
    with pytest.raises(ValidationError):
        SearchRequest.model_validate({"query": "x", "k": 0})
    with pytest.raises(ValidationError):
        SearchRequest.model_validate({"query": "x", "unknown": 1})
    schemas = json_schemas()
    assert set(schemas) == set(PAYLOADS)
    assert schemas["SearchRequest"]["properties"]["alpha"]["maximum"] == 1.0
