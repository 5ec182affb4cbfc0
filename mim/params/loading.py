"""Read params from YAML with `--set key=value` overrides; every error names the file, the dotted
field path and the reason."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mim.params.methods import METHOD_NAMES

M = TypeVar("M", bound=BaseModel)
# Discriminated-union tags pydantic puts into error locations (method.mae.mask_ratio -> method.mask_ratio,
# model.cnn.name -> model.name).
_TAGS = {"method": set(METHOD_NAMES), "model": {"vit", "cnn", "hier"}}
# Union members pydantic also puts there (launcher.nproc_per_node.literal['auto'] -> launcher.nproc_per_node).
_UNION_MEMBER = re.compile(r"^(int|float|str|bool|none|constrained-\w+|(literal|list|tuple|function-\w+)\[.*\])$")


_SECTION_ERRORS = ("model_type", "dict_type", "model_attributes_type")  # pydantic: a mapping was expected


class ParamsError(ValueError):
    """Invalid parameters: the message lists `file: field.path: reason (got value)` lines."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last one without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one section (also on line {seen[key] + 1}); the "
                    "second would silently win", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], YAML-parsed value)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"--set {item!r}: expected key=value, e.g. train.steps=100")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ParamsError(f"--set {item!r}: value is not valid YAML: {err}") from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `key.path=value` set (intermediate mappings created)."""
    out = _deep_copy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ParamsError(f"--set {item!r}: {'.'.join(path[: i + 1])} is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from `path` (safe_load). An empty file, a YAML syntax error and a top level that is not a
    mapping are ParamsErrors naming the file (and the line of a syntax error)."""
    p = Path(path)
    if not p.is_file():
        raise ParamsError(f"{p}: params file not found")
    try:
        data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ParamsError(f"{p}{where}: not valid YAML: {reason}") from None
    if data is None:
        raise ParamsError(f"{p}: the params file is empty; write `{{}}` in it for every default, or restore it "
                          "(git checkout)")
    if not isinstance(data, dict):
        raise ParamsError(f"{p}: expected a mapping (key: value lines) at the top level, got {_kind(data)}")
    return data


def section(data: dict[str, Any], key: str, origin: str | Path) -> dict[str, Any]:
    """`data[key]` as a mapping ({} when absent): a scalar or list where a section is expected is a ParamsError
    naming `origin` and `key` (`method: mae` instead of `method: {name: mae}`)."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        hint = f"; write `{key}: {{name: {value}}}`" if key == "method" and isinstance(value, str) else ""
        raise ParamsError(f"{origin}: {key}: expected a section (indented key: value lines under it), got "
                          f"{_kind(value)}{hint}")
    return value


def _kind(value: Any) -> str:
    """`value` as a message names it: "the list [1, 2]", "the value 'mae'"."""
    kind = "list" if isinstance(value, list) else "value"
    return f"the {kind} {value!r}"


def validate(model: type[M], data: dict[str, Any], origin: str) -> M:
    """`model.model_validate(data)`, with a ParamsError naming `origin` and each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems: dict[str, list[str]] = {}  # field -> reasons (a union field fails once per member type)
        got: dict[str, str] = {}
        for e in err.errors():
            loc = [p for i, p in enumerate(e["loc"]) if not (i and p in _TAGS.get(e["loc"][i - 1], ()))
                   and not (isinstance(p, str) and _UNION_MEMBER.match(p))]
            where = ".".join(str(p) for p in loc) or "(top level)"
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] in _SECTION_ERRORS:
                msg = "expected a section (indented key: value lines under it)"
            problems.setdefault(where, []).append(msg)
            if e["type"] != "missing" and not isinstance(e["input"], dict):
                got[where] = f" (got {e['input']!r})"
        lines = [f"{origin}: {where}: {' or '.join(dict.fromkeys(msgs))}{got.get(where, '')}"
                 for where, msgs in problems.items()]
        raise params_error(lines) from None


def params_error(problems: list[str], header: str = "invalid parameters") -> ParamsError:
    """One line for one problem, like every other error; an indented list for several."""
    if len(problems) == 1:
        return ParamsError(f"{header}: {problems[0]}")
    return ParamsError(f"{header}:\n  " + "\n  ".join(problems))


def problems_of(err: ParamsError) -> list[str]:
    """The problem lines of a `params_error` (to gather several files' problems into one error)."""
    text = str(err).removeprefix("invalid parameters")
    if text.startswith(":\n  "):
        return text[4:].split("\n  ")
    return [text.removeprefix(": ")]


def load_params(model: type[M], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> M:
    """Validate `base` <- YAML file <- overrides into `model`."""
    data = deep_merge(base or {}, read_yaml(path) if path else {})
    data = apply_overrides(data, overrides or [])
    origin = str(path) if path else "params"
    if overrides:
        origin += " (with --set " + ", ".join(overrides) + ")"
    return validate(model, data, origin)


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = _deep_copy(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
