"""The one way a YAML file becomes a validated model: every spec, intent and sensor file is
read here, so each of their errors names the file, the line and the field the same way
(`file:line: field: message`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dagster_llmdata.errors import LlmdataError, SpecError

# A validator nested under a model field (an operator's params) raises "bad param a.b: msg" so the
# error points at the param's own line rather than at the field holding it.
PARAM_ERROR = "bad param "

Model = TypeVar("Model", bound=BaseModel)


def load_model(path: str | Path, model: type[Model], *, shape: str, what: str = "spec",
               error: type[LlmdataError] = SpecError) -> Model:
    """`model` validated from the YAML file at `path`. Every failure raises `error` naming the file:
    unreadable (`cannot read <what>`), bad YAML or not a mapping (`:1: <shape>`), invalid fields
    (one `file:line: field: message` per problem)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from None
    return model_from_yaml(path, text, model, shape=shape, error=error)


def model_from_yaml(path: Path, text: str, model: type[Model], *, shape: str, error: type[LlmdataError] = SpecError) -> Model:
    """`model` from YAML text already read from `path` (`path` names the file in errors)."""
    node, data = parse_yaml(path, text, error)
    if not isinstance(data, dict):
        raise error(f"{path}:1: {shape}")
    return validate(path, node, data, model, error=error)


def validate(path: Path, node: yaml.Node | None, data: Any, model: type[Model], *, prefix: list | None = None,
             error: type[LlmdataError] = SpecError) -> Model:
    """`model` from `data`, read from `node` of the file at `path` (`prefix`: that node's field path)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(describe_validation_error(path, node, exc, prefix)) from None


def parse_yaml(path: Path, text: str, error: type[LlmdataError] = SpecError) -> tuple[yaml.Node | None, Any]:
    """A YAML file's node tree (for error lines) and its data; bad YAML raises `error` naming file:line."""
    try:
        return yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise error(f"{path}:{mark.line + 1 if mark else 1}: invalid YAML: {getattr(exc, 'problem', exc)}") from None


def describe_validation_error(path: Path, node: yaml.Node | None, exc: ValidationError, prefix: list | None = None) -> str:
    """One `file:line: field: message` per error; `node` is the YAML node the model was read
    from, `prefix` the field path of that node in its file (for the message only)."""
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if msg.startswith(PARAM_ERROR):  # an operator param: point at the param's own line
            param_path, msg = msg.removeprefix(PARAM_ERROR).split(": ", 1)
            loc += [int(p) if p.isdigit() else p for p in param_path.split(".")]
        line = line_of(node, loc)
        field = ".".join(str(p) for p in (prefix or []) + loc) or "(top level)"
        lines.append(f"{path}:{line}: {field}: {msg}")
    return "\n".join(lines)


def line_of(node: yaml.Node | None, loc: list) -> int:
    """Line of the deepest YAML node that the error path reaches (a mapping entry: its key's line)."""
    line = (node.start_mark.line + 1) if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line

