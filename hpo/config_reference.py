"""The sweep config's reference, generated from the models that validate it (``hpo.config.SweepConfig`` and the
training dataclasses in ``trials.config``): every field with its YAML path, type, default and one line of
meaning. ``python -m hpo.config_reference > docs/CONFIG.md`` writes it; ``tests/test_config_reference.py`` fails
when the committed file differs from what the code generates.

A field's meaning is its pydantic ``description``; else the comment on its line, or the comment lines right above
it, in the class's source (the training dataclasses carry no pydantic metadata: plain dataclasses keep workers
free of pydantic). A section's heading line is its class docstring's first paragraph.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import sys
import tokenize
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

#: ``train`` keys a sweep config may not set: the sweep sets them from these fields.
SWEEP_OWNED = {"metric": "study.metric", "early_stopping": "early_stopping"}


@dataclass(frozen=True)
class Row:
    path: str  # the YAML path, dotted: train.dataset.path
    type: str
    default: str
    meaning: str


@dataclass(frozen=True)
class Section:
    path: str  # "" for the top level
    about: str
    rows: list[Row]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and (issubclass(tp, BaseModel) or dataclasses.is_dataclass(tp))


def _fields(cls: type) -> Iterator[tuple[str, Any, Any, str | None]]:
    """(name, type, default, description) of each field of a pydantic model or a dataclass, in order."""
    default: Any
    if issubclass(cls, BaseModel):
        for name, info in cls.model_fields.items():
            default = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
            yield name, info.annotation, default, info.description
        return
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = PydanticUndefined
        yield f.name, hints[f.name], default, None


def _comments(cls: type) -> dict[str, str]:
    """Field name -> the comment on its line in ``cls``'s source, else the comment lines right above it."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    field_line = re.compile(r"^    ([a-z_][a-z0-9_]*)\s*:")
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and line.startswith("    #"):
            above.append(stripped.lstrip("#:").strip())
            continue
        m = field_line.match(line)
        if m:
            trailing = _trailing_comment(line)
            text = trailing or " ".join(above)
            if text:
                out.setdefault(m.group(1), text)
        above = []
    return out


def _trailing_comment(line: str) -> str | None:
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
            if tok.type == tokenize.COMMENT:
                return tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    return None


def type_name(tp: Any) -> str:
    """A type as a reader of YAML sees it: ``int | null``, ``'tpe' | 'random'``, ``list of str``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_name(a) for a in args))
    if origin in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {type_name(inner[0])}" if inner else "list"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}" if args else "mapping"
    if tp is Any:
        return "any"
    if isinstance(tp, type):
        return {"str": "str", "int": "int", "float": "float", "bool": "bool"}.get(tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


def default_text(value: Any) -> str:
    if value is PydanticUndefined:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(default_text(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


def _about(cls: type) -> str:
    """The first paragraph of ``cls``'s own docstring ("" for none: not pydantic's, not a dataclass's signature)."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    if doc.startswith(f"{cls.__name__}("):
        return ""
    return " ".join(doc.split("\n\n")[0].split())


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.:;])\s", text, maxsplit=1)[0].rstrip(".:;")


def sections(root: type, path: str = "") -> list[Section]:
    """``root``'s fields as one section, then each nested model's, depth first."""
    from hpo.space import DEFAULT_SPACE

    rows: list[Row] = []
    nested: list[Section] = []
    comments = _comments(root)
    for name, tp, default, description in _fields(root):
        full = f"{path}.{name}" if path else name
        if path == "train" and name in SWEEP_OWNED:
            continue  # a sweep config sets these elsewhere (SweepConfig refuses them under train)
        meaning = " ".join((description or comments.get(name, "")).split())
        if path == "train" and name in DEFAULT_SPACE:
            meaning = (meaning + "; " if meaning else "") + "searched by default: set it in search_space"
        model = _nested_model(tp)
        if model is not None:
            nested.extend(sections(model, full))
            rows.append(Row(full, "section", "", meaning or _first_sentence(_about(model))))
            continue
        rows.append(Row(full, type_name(tp), default_text(default), meaning))
    return [Section(path, _about(root), rows), *nested]


def _nested_model(tp: Any) -> type | None:
    if _is_model(tp):
        return typing.cast(type, tp)
    return None


def _cell(text: str) -> str:
    """Table-cell text: pipes escaped, reST's double backticks as Markdown's single ones."""
    return text.replace("``", "`").replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """docs/CONFIG.md's text."""
    from hpo.config import SweepConfig
    from hpo.space import DEFAULT_SPACE
    from trials.config import TrainConfig

    out = [
        "# Sweep config reference",
        "",
        "Generated from the config models (`hpo/config.py`, `trials/config.py`) by "
        "`python -m hpo.config_reference > docs/CONFIG.md`; `tests/test_config_reference.py` checks that it "
        "matches the code. Every key is optional; unknown keys are refused. Paths are dotted: "
        "`train.dataset.path` is `path:` under `dataset:` under `train:`.",
        "",
    ]
    for section in sections(SweepConfig):
        out += [f"## {f'`{section.path}`' if section.path else 'Top level'}", ""]
        if section.about:
            out += [section.about.replace("``", "`"), ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        out += [_row(r) for r in section.rows]
        out.append("")
    if any(s.path == "train" for s in sections(SweepConfig)):
        owned = ", ".join(f"`train.{k}` (set by `{v}`)" for k, v in SWEEP_OWNED.items())
        out += [f"In a sweep config, {owned} are not set under `train:`; an `hpo export` file has them.", ""]
    out += _space_section(DEFAULT_SPACE, TrainConfig())
    return "\n".join(out).rstrip() + "\n"


def _space_section(space: dict[str, Any], train: Any) -> list[str]:
    lines = [
        "## `search_space`: the implicit defaults",
        "",
        "Unless `search_space` gives them a range or fixes them, every sweep searches these five (a given "
        "`search_space` is merged over them):",
        "",
        "| key | searched as |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | `{_flow(v)}` |" for k, v in space.items()]
    first, second, *rest = list(space)
    fixed = ", ".join(f"{k}: {default_text(getattr(train, k))}" for k in rest)
    lines += [
        "",
        f"To search only two of them, fix the others (a bare value is fixed for every trial), e.g. {first} and "
        f"{second} with the rest at the training defaults:",
        "",
        "```yaml",
        "search_space:",
        f"  {first}: {_flow(space[first])}",
        f"  {second}: {_flow(space[second])}",
        *[f"  {part}" for part in fixed.split(", ")],
        "```",
        "",
    ]
    return lines


def _row(r: Row) -> str:
    return f"| `{r.path}` | {_cell(r.type)} | {_code(r.default)} | {_cell(r.meaning) or '-'} |"


def _code(text: str) -> str:
    return f"`{_cell(text)}`" if text else ""


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return default_text(value)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
