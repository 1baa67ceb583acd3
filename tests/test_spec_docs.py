"""Every kind's spec speaks to scientists: the form's labels and help come from its field
titles and descriptions, and its `x-applies-when` conditions (which grey out the fields that
do not apply) name real fields and values those fields can take."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import TypeAdapter, ValidationError

from syngeo.kinds import KINDS

FIELDS = [(kind, name) for kind in KINDS.values() for name in kind.Spec.model_fields]


def _ids(case: tuple) -> str:
    kind, name = case
    return f"{kind.name}.{name}"


@pytest.mark.parametrize("case", FIELDS, ids=[_ids(c) for c in FIELDS])
def test_every_field_has_a_written_title_and_description(case) -> None:
    kind, name = case
    prop = kind.schema()["properties"][name]
    automatic = name.replace("_", " ")  # what pydantic titles it ("Lr Min"), in any case
    assert prop.get("title") and prop["title"].lower() != automatic.lower(), prop.get("title")
    description = prop.get("description") or ""
    assert description.strip(), f"{name} has no description"
    for jargon in ("/api/", "CLI only", "(CLI)"):
        assert jargon not in description, description


def _field_accepts(kind, name: str, value: Any) -> bool:
    """Whether field `name` of the kind's spec takes `value` unchanged (its type and bounds)."""
    info = kind.Spec.model_fields[name]
    try:
        return TypeAdapter(Annotated[info.annotation, info]).validate_python(value) == value
    except ValidationError:
        return False


def _conditions(prop: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives of an `x-applies-when`: one object (all must hold) or a list of them
    (any one holds)."""
    when = prop["x-applies-when"]
    return when if isinstance(when, list) else [when]


CONDITIONAL = [(kind, name) for kind, name in FIELDS
               if "x-applies-when" in kind.schema()["properties"][name]]


def test_the_fields_that_depend_on_others_say_so() -> None:
    found = {f"{kind.name}.{name}" for kind, name in CONDITIONAL}
    assert {"linear_regression.lr_min", "linear_regression.mse_target",
            "finetuning.cnn_channels_1", "spine_fit.n_components", "geometry.calibration",
            "power.calibration"} <= found, found


@pytest.mark.parametrize("case", CONDITIONAL, ids=[_ids(c) for c in CONDITIONAL])
def test_applies_when_names_existing_fields_and_values_they_take(case) -> None:
    kind, name = case
    props = kind.schema()["properties"]
    alternatives = _conditions(props[name])
    assert alternatives and all(isinstance(a, dict) and a for a in alternatives), alternatives
    for alternative in alternatives:
        for other, condition in alternative.items():
            assert other in props and other != name, f"{name} depends on unknown field {other}"
            is_array = props[other].get("type") == "array"
            if isinstance(condition, dict):  # {"above": x}: a number (or a list of numbers)
                assert set(condition) == {"above"}, condition
                threshold = condition["above"]
                assert isinstance(threshold, int | float), condition
                probe = [threshold + 1] if is_array else threshold + 1
                assert _field_accepts(kind, other, probe), (other, probe)
            else:  # a list of the values that make the field apply
                assert isinstance(condition, list) and condition, condition
                for value in condition:
                    probe = [value] if is_array else value
                    assert _field_accepts(kind, other, probe), (other, value)


def test_a_value_outside_the_field_is_caught() -> None:
    """The check above can fail: a value the controlling field cannot take is refused."""
    kind = KINDS["linear_regression"]
    assert _field_accepts(kind, "solver", "training")
    assert not _field_accepts(kind, "solver", "trained")
    assert not _field_accepts(KINDS["spine_fit"], "init_models", ["gamma"])


def _enum_values(prop: dict[str, Any], root: dict[str, Any]) -> set[Any]:
    """The values a choice field offers (the items' for a multi-choice), through $refs."""
    def resolve(p: dict[str, Any]) -> dict[str, Any]:
        ref = p.get("$ref")
        return root["$defs"][ref.rsplit("/", 1)[1]] if ref else p
    target = resolve(prop.get("items", prop)) if prop.get("type") == "array" else prop
    return set(resolve(target).get("enum", ()))


def test_every_choice_is_offered_in_words() -> None:
    """Choices (solver, start, initial-weight model, network, device) have labels for the
    form, one for each value the field takes and none for a value it does not."""
    for kind in KINDS.values():
        schema = kind.schema()
        for name, prop in schema["properties"].items():
            values = _enum_values(prop, schema)
            if len(values) > 1:
                assert set(prop.get("x-enum-labels", {})) == values, (kind.name, name)
