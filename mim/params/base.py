"""What every params model shares: unknown keys are errors, values frozen; common constrained types; YAML 1.1
booleans (`off`, `no`, `on`, `yes` unquoted) where a word is expected; the run-control mark."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
MaskRatio = Annotated[float, Field(gt=0.0, lt=1.0)]  # 0 masks nothing: no loss, no learning
PositiveInt = Annotated[int, Field(gt=0)]
# `json_schema_extra` of a field that steers how a run goes (checkpoint cadence, device, logging, data loading), not
# what it computes: a killed run may resume with it changed, and a run's identity leaves it out.
RUN_CONTROL: dict[str, Any] = {"run_control": True}


def is_run_control(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("run_control") is True


def run_control(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s run-control fields, nested models included, as a pydantic `exclude` spec
    (`{"train": {"device": True, ...}, "launcher": True}`): what `model_dump(exclude=...)` leaves out of an identity."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if is_run_control(field):
            out[name] = True
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            nested = run_control(field.annotation)
            if nested:
                out[name] = nested
    return out


class Strict(BaseModel):
    """Unknown keys are errors; values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans(cls, data: Any) -> Any:
        """YAML 1.1 reads unquoted off/no/false as False and on/yes/true as True. A field whose words include
        "off" (or "on") takes the boolean as that word, the one meaning it can have; any other field that expects
        a word or a number and no boolean says what it accepts (pydantic would read yes as 1)."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(value, bool) else None
            if field is None:
                continue
            words, takes_bool = accepted_words(field.annotation)
            numbers = takes_numbers(field.annotation)
            if takes_bool or (words is None and not numbers):
                continue
            word = "on" if value else "off"
            if words is not None and word in words:
                out[name] = word
                continue
            read = "on, yes or true" if value else "off, no or false"
            choices = " or ".join(filter(None, [
                (f"one of {', '.join(repr(w) for w in words)}" if words else "a string") if words is not None else "",
                "a number" if numbers else ""]))
            fix = f"quote the word ({name}: '{words[0] if words else word}')" if words is not None else "give a number"
            raise ValueError(f"{name}: YAML reads an unquoted {read} as the boolean {str(value).lower()}, but "
                             f"{name} takes {choices}; {fix}")
        return out


def accepted_words(annotation: Any) -> tuple[list[str] | None, bool]:
    """(the string literals `annotation` accepts ([] for any string, None for no string), whether it accepts a
    bool)."""
    origin = get_origin(annotation)
    if annotation is bool:
        return None, True
    if annotation is str:
        return [], False
    if origin is Literal:
        literals = [a for a in get_args(annotation) if isinstance(a, str)]
        return (literals or None), any(isinstance(a, bool) for a in get_args(annotation))
    if origin is Annotated:
        return accepted_words(get_args(annotation)[0])
    if origin is Union or (origin is not None and type(annotation).__name__ == "UnionType"):
        words: list[str] | None = None
        takes_bool = False
        for member in get_args(annotation):
            w, b = accepted_words(member)
            takes_bool |= b
            if w is not None:
                words = (words or []) + w
        return words, takes_bool
    return None, False


def takes_numbers(annotation: Any) -> bool:
    """True when `annotation` accepts an int or a float (`PositiveInt | Literal["auto"]`)."""
    origin = get_origin(annotation)
    if annotation in (int, float):
        return True
    if origin is Annotated:
        return takes_numbers(get_args(annotation)[0])
    if origin is Union or (origin is not None and type(annotation).__name__ == "UnionType"):
        return any(takes_numbers(a) for a in get_args(annotation))
    return False
