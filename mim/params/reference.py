"""The params reference (docs/params.md), generated from the pydantic models so it cannot drift from them.

Every params file gets a table of its keys (dotted for nested sections) with type, default and description;
a discriminated union (a recipe's `method` by `name`, its `model` by `arch`) gets one table per choice.
Regenerate with `mim params reference > docs/params.md` (or `python -m mim.params.reference`);
tests/test_params_reference.py fails when the file is stale.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from mim.params.base import is_run_control
from mim.params.evaluation import EvalParams, TransferParams
from mim.params.models import DataParams, RecipeParams
from mim.params.pipeline import PipelineParams
from mim.params.targets import DiversityParams, TeacherParams, TokenizerParams

REGENERATE = "mim params reference > docs/params.md"

# (file, model, what it is), in the order a newcomer meets them
FILES: tuple[tuple[str, type[BaseModel], str], ...] = (
    ("pipeline.yaml", PipelineParams, "the pipeline's recipes, their random-init baselines and the seeds "
     "(dvc.yaml's `vars`)"),
    ("data.yaml", DataParams, "the images every stage reads: source, splits, size, normalization, augmentation, "
     "storage"),
    ("<recipe>.yaml", RecipeParams, "one pre-training recipe (`mae.yaml`, `cim-resnet.yaml`, ...): the method, "
     "the encoder, optimizer, schedule, training loop and launcher"),
    ("eval.yaml", EvalParams, "frozen-encoder evaluation: k-NN and linear probe"),
    ("transfer.yaml", TransferParams, "fine-tuning of every pre-trained encoder and the scratch baseline"),
    ("tokenizer.yaml", TokenizerParams, "the k-means codebook of patch pixels CCViT and CIM predict"),
    ("teacher.yaml", TeacherParams, "the frozen teacher whose features Img2Vec (and DMJD) regress"),
    ("diversity.yaml", DiversityParams, "token diversity of teachers and encoders"),
)

def params_reference() -> str:
    """The whole reference as markdown (what docs/params.md holds)."""
    out = ["# Params reference", "",
           f"Generated from the pydantic models in `mim/params/`; do not edit: run `{REGENERATE}`.",
           "Every file rejects unknown keys; `mim params check` validates them all, `mim params show NAME` prints "
           "a file's resolved values. How the files are read and checked together: "
           "[pipeline.md](pipeline.md#params-files).",
           "Keys marked *(run control)* steer how a run goes, not what it computes (device, checkpoint cadence, "
           "logging, data loading, the launcher): they are not part of a run's identity, so a killed run may resume "
           "with them changed; changing any other key makes a resume refuse and name it (`train.resume`).", ""]
    out += [f"- [`{name}`](#{_anchor(name)}): {what}" for name, _, what in FILES]
    for name, model, what in FILES:
        out += ["", f"## {name}", "", _doc(model) or what, ""]
        out += _model_tables(model, "", name)
    return "\n".join(out).rstrip() + "\n"


def _model_tables(model: type[BaseModel], prefix: str, file: str) -> list[str]:
    """The table of `model`'s plain fields (nested models flattened), then one section per union choice."""
    rows: list[str] = []
    unions: list[tuple[str, FieldInfo]] = []
    _rows(model, prefix, rows, unions)
    out = (["| key | type | default | description |", "|---|---|---|---|", *rows] if rows else [])
    for key, field in unions:
        value = _map_value_model(field.annotation)
        if value is not None:
            out += ["", f"### {file}: `{key}.<label>`", "", f"Each entry of `{key}` is a `{value.__name__}`"
                    + (f": {_doc(value)}" if _doc(value) else "."), ""]
            out += _model_tables(value, f"{key}.<label>.", file)
            continue
        tag, choices = _union_choices(field)
        out += ["", f"### {file}: `{key}`", "",
                f"One of the following, chosen by `{key}.{tag}`"
                + (f" (default `{_default_tag(field, tag)}`)." if _default_tag(field, tag) else "."), ""]
        for choice in choices:
            out += [f"#### `{key}.{tag}: {choice.model_fields[tag].default}`", ""]
            if _doc(choice):
                out += [_doc(choice), ""]
            out += _model_tables(choice, f"{key}.", file) + [""]
    return out


def _rows(model: type[BaseModel], prefix: str, rows: list[str], unions: list[tuple[str, FieldInfo]],
          control: bool = False) -> None:
    """`control`: `model` is a run-control section (every key in it is)."""
    for name, field in model.model_fields.items():
        key = prefix + name
        field_control = control or is_run_control(field)
        if _union_choices(field)[1] or _map_value_model(field.annotation) is not None:
            unions.append((key, field))  # a table of its own after this one
        if _union_choices(field)[1]:
            continue
        nested = _model_of(field.annotation)
        if nested is not None:
            _rows(nested, key + ".", rows, unions, field_control)
            continue
        rows.append(f"| `{key}` | {_cell(_type(field.annotation, field.metadata))} | {_cell(_default(field))} | "
                    f"{_cell(_description(field, field_control))} |")


def _description(field: FieldInfo, control: bool) -> str:
    """The field's description; a run-control one says that a resumed run may change it."""
    text = field.description or ""
    return (f"{text} " if text else "") + "*(run control)*" if control else text


def _union_choices(field: FieldInfo) -> tuple[str, list[type[BaseModel]]]:
    """(the discriminating key, the model choices) of a discriminated union of models, else ("", [])."""
    members = [_model_of(m) for m in get_args(field.annotation)] if _is_union(field.annotation) else []
    if len(members) < 2 or None in members:
        return "", []
    tag = next((t for t in members[0].model_fields if all(
        get_origin(m.model_fields.get(t).annotation if t in m.model_fields else None) is Literal for m in members)),
        "")
    return (tag, members) if tag else ("", [])


def _map_value_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a `dict[str, Model]` field's values, else None."""
    return _model_of(get_args(annotation)[1]) if get_origin(annotation) is dict else None


def _default_tag(field: FieldInfo, tag: str) -> str:
    default = field.get_default(call_default_factory=True)
    return str(getattr(default, tag, "")) if isinstance(default, BaseModel) else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if get_origin(annotation) is Annotated:
        return _model_of(get_args(annotation)[0])
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _is_union(annotation: Any) -> bool:
    origin = get_origin(annotation)
    return origin is Union or (origin is not None and type(annotation).__name__ == "UnionType")


def _type(annotation: Any, metadata: list[Any] = ()) -> str:
    """A short, YAML-minded rendering: `int > 0`, `"auto" | "cpu"`, `[float, float]`, `... | null`."""
    bounds = {attr: getattr(m, attr) for m in metadata for attr in ("gt", "ge", "lt", "le")
              if isinstance(m, getattr(annotated_types, attr.capitalize()))}
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *meta = get_args(annotation)
        meta = [x for m in meta for x in (m.metadata if isinstance(m, FieldInfo) else [m])]
        text = _type(inner, meta)
    elif annotation is type(None):
        text = "null"
    elif _is_union(annotation):
        text = " \\| ".join(_type(a) for a in get_args(annotation))
    elif origin is Literal:
        text = " \\| ".join(json.dumps(a) for a in get_args(annotation))
    elif origin is tuple:
        args = get_args(annotation)
        text = (f"[{_type(args[0])}, ...]" if len(args) == 2 and args[1] is Ellipsis
                else "[" + ", ".join(_type(a) for a in args) + "]")
    elif origin is list:
        text = f"list of {_type(get_args(annotation)[0])}"
    elif origin is dict:
        key, value = get_args(annotation)
        value_text = f"`{value.__name__}` (below)" if _model_of(value) else _type(value)
        text = f"map {_type(key)} -> {value_text}"
    elif isinstance(annotation, type):
        text = {"str": "string", "NoneType": "null"}.get(annotation.__name__, annotation.__name__)
    else:
        text = str(annotation)
    return _bounded(text, bounds)


def _bounded(text: str, bounds: dict[str, Any]) -> str:
    """`0 <= float < 1`, `int > 0`: the constraints of an Annotated number around its type."""
    low = next((f"{bounds[k]} {sign} " for k, sign in (("gt", "<"), ("ge", "<=")) if k in bounds), "")
    high = next((f" {sign} {bounds[k]}" for k, sign in (("lt", "<"), ("le", "<=")) if k in bounds), "")
    if low and not high:  # `int > 0` reads better than `0 < int`
        return f"{text} {'>' if 'gt' in bounds else '>='} {bounds.get('gt', bounds.get('ge'))}"
    return f"{low}{text}{high}"


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return f"`{json.dumps(value if not isinstance(value, tuple) else list(value))}`"


def _doc(model: type[BaseModel]) -> str:
    """A model's own docstring (not one inherited from the shared base classes), on one line."""
    doc = model.__dict__.get("__doc__") or ""
    return " ".join(doc.split())


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|").replace("\\\\|", "\\|")


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation other than - and _ dropped, spaces to -."""
    return "".join(c for c in title.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def main() -> int:
    sys.stdout.write(params_reference())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
