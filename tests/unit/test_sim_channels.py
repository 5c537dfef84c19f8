"""The simulated model's JSON: valid for the schema it is given, the same for the same seed."""

from __future__ import annotations

import json
from typing import Any

import pydantic

from services.runner.backends.sim_channels import json_pieces


class Place(pydantic.BaseModel):
    name: str
    rank: int | None


class Trip(pydantic.BaseModel):
    days: int
    budget: float
    places: list[Place]
    mode: str = "train"
    booked: bool


def test_arguments_validate_against_a_pydantic_schema_with_refs_and_unions() -> None:
    schema: dict[str, Any] = Trip.model_json_schema()
    for seed in range(20):
        pieces = json_pieces(schema, "plan a trip", seed)
        trip = Trip.model_validate_json("".join(pieces))
        assert trip.places and isinstance(trip.places[0], Place)


def test_the_same_prompt_and_seed_give_the_same_fragments() -> None:
    schema = Trip.model_json_schema()
    first = json_pieces(schema, "plan", 7)
    assert json_pieces(schema, "plan", 7) == first
    assert json_pieces(schema, "plan", 8) != first
    assert len(first) > 5 and all(first)


def test_no_schema_gives_an_empty_object() -> None:
    assert json.loads("".join(json_pieces(None, "x", 0))) == {}
