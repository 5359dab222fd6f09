"""YAML files read into plain values, with the file and line of every value, and errors that point there.

``compose`` reads one file into dicts, lists and scalars (merge keys ``<<: *name`` expanded; a duplicate
key is an error) and ``Lines``: each value's path, e.g. ``("targets", "emu", "build")``, mapped to the file
and line where it is written. ``read_sections`` reads a file of sections of named definitions, with
``include: [other.yaml, ...]`` merged in. ``fail`` raises a ``ConfigError`` that starts with
``FILE:LINE: dotted.path:``; ``validate`` checks a value against a pydantic model and reports its first
problem that way, at the line of the value at fault.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, NoReturn, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from gatewright.errors import GatewrightError

MERGE_TAG = "tag:yaml.org,2002:merge"

Key = tuple[str | int, ...]
Lines = dict[Key, tuple[Path, int]]  # a value's path -> the file and 1-based line where it is written
M = TypeVar("M", bound=BaseModel)


class ConfigError(GatewrightError):
    """A file (an experiment file, ...) that cannot be used as written; the message starts with FILE:LINE:."""


class FieldProblem(ValueError):
    """Raised in a validator: the problem is at ``path`` below the value being validated."""

    def __init__(self, path: Key, message: str) -> None:
        super().__init__(message)
        self.path = path


# reading: YAML with the line of every value, includes merged


def read_sections(
    file: Path, sections: tuple[str, ...], what: str = "YAML file", example: str = ""
) -> tuple[dict[str, dict[str, Any]], Lines]:
    """The sections of ``file`` (each a mapping of names to definitions) with its includes merged in,
    and the line of every value; ``what`` names the file in errors, ``example`` shows a valid one.

    ``include: [common.yaml, ...]`` reads other files first (relative to the one that includes them;
    they may include others). A name defined in a file overrides the one it includes; two included
    files may not define the same name.
    """
    return _read(file, (), sections, what, example)


def _read(
    file: Path, chain: tuple[Path, ...], names: tuple[str, ...], what: str, example: str
) -> tuple[dict[str, dict[str, Any]], Lines]:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such {what}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the {what} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not a text file; write the {what} as UTF-8 YAML") from None
    data, own = compose(file, text)
    sections: dict[str, dict[str, Any]] = {section: {} for section in names}
    lines: Lines = {key: where for key, where in own.items() if len(key) < 2}
    origin: dict[tuple[str, str], Path] = {}  # (section, name) -> the file that defines it
    if data is None:
        return sections, lines
    if not isinstance(data, dict):
        hint = f"; {example}" if example else ""
        fail(own, (), f"the top level must be a mapping with {', '.join(names)} (and include){hint}")
    for key in data:
        if key not in ("include", *names):
            fail(own, (key,), unknown_key(key, ["include", *names]))
    mine: dict[str, Any] = {section: data.get(section) or {} for section in names}  # this file's definitions
    for section, entries in mine.items():
        if not isinstance(entries, dict):
            fail(own, (section,), "must be a mapping of names to definitions (NAME: {...})")
    includes = data.get("include") or []
    includes = [includes] if isinstance(includes, str) else includes
    if not isinstance(includes, list) or not all(isinstance(item, str) for item in includes):
        fail(own, ("include",), "write include: [common.yaml, ...] (paths relative to this file)")
    for index, name in enumerate(includes):
        at = ("include", index) if ("include", index) in own else ("include",)
        included = file.parent / Path(name).expanduser()
        loop = [*chain, file, included]
        if any(included.resolve() == step.resolve() for step in loop[:-1]):
            fail(own, at, f"include cycle: {' -> '.join(step.name for step in loop)}; remove one of these includes")
        if not included.is_file():
            fail(own, at, f"no such file {included} (include paths are relative to {file.parent})")
        sub_sections, sub_lines = _read(included, (*chain, file), names, what, example)
        for section, entries in sub_sections.items():
            for entry, value in entries.items():
                source = sub_lines[(section, entry)][0]
                before = origin.get((section, entry))
                if before is not None and before.resolve() != source.resolve() and entry not in mine[section]:
                    fix = f"rename one, or define {entry} in {file} to override both"
                    fail(sub_lines, (section, entry), f"defined in both {before} and {source}; {fix}")
                _define(sections, lines, origin, section, entry, value, sub_lines)
    for section, entries in mine.items():
        for entry, value in entries.items():
            _define(sections, lines, origin, section, entry, value, own)
    return sections, lines


def _define(
    sections: dict[str, dict[str, Any]],
    lines: Lines,
    origin: dict[tuple[str, str], Path],
    section: str,
    name: str,
    value: Any,
    source: Lines,
) -> None:
    prefix = (section, name)
    for key in [key for key in lines if key[:2] == prefix]:
        del lines[key]  # an override replaces the whole definition
    lines.update((key, where) for key, where in source.items() if key[:2] == prefix)
    sections[section][name] = value
    origin[prefix] = source[prefix][0]


def compose(file: Path, text: str) -> tuple[Any, Lines]:
    lines: Lines = {(): (file, 1)}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        return (None if node is None else _value(node, (), file, lines, frozenset())), lines
    except yaml.MarkedYAMLError as exc:
        mark, context = exc.problem_mark or exc.context_mark, exc.context_mark
        where = f" ({exc.context} at line {context.line + 1})" if exc.context and context else ""
        raise ConfigError(f"{file}:{mark.line + 1 if mark else 1}: not valid YAML: {exc.problem}{where}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}:1: not valid YAML: {exc}") from None


def _value(node: yaml.Node, path: Key, file: Path, lines: Lines, active: frozenset[int]) -> Any:
    """The value of a composed node, recording the line of every key and item below it."""
    if id(node) in active:
        fail(lines, path, "an alias refers to the value it is in (*name inside &name); write the value out")
    active = active | {id(node)}
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            lines[(*path, index)] = (file, item.start_mark.line + 1)
            items.append(_value(item, (*path, index), file, lines, active))
        return items
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:  # << : *defaults
                merged += value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{file}:{line}: {dotted(path)}: a key must be a name, not a list or mapping")
            key = str(yaml.constructor.SafeConstructor().construct_object(key_node))
            if key in result:
                raise ConfigError(
                    f"{file}:{line}: {dotted((*path, key))}: duplicate key '{key}' (also at line "
                    f"{lines[(*path, key)][1]}); YAML keeps only the last one: remove or rename one"
                )
            lines[(*path, key)] = (file, line)
            result[key] = _value(value_node, (*path, key), file, lines, active)
        for source in merged:  # explicit keys win over merged ones
            source_lines: Lines = {}
            extra = _value(source, path, file, source_lines, active)
            if not isinstance(extra, dict):
                fail(lines, path, "<< merges a mapping (<<: *name, with &name on a mapping)")
            for key in [key for key in extra if key not in result]:
                result[key] = extra[key]
                lines.update((k, v) for k, v in source_lines.items() if k[: len(path) + 1] == (*path, key))
        return result
    return yaml.constructor.SafeConstructor().construct_object(node)


# errors: FILE:LINE: dotted.path: message, pydantic's problems traced back to their lines


def fail(lines: Lines, path: Key, message: str) -> NoReturn:
    for length in range(len(path), -1, -1):
        if path[:length] in lines:
            file, line = lines[path[:length]]
            break
    raise ConfigError(f"{file}:{line}: {dotted(path)}: {message}" if path else f"{file}:{line}: {message}")


def dotted(path: Key) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def unknown_key(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ";"
    return f"unknown key '{key}'{hint} valid keys: {', '.join(valid)}"


def validate(lines: Lines, model: type[M], data: Any, path: Key) -> M:
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        where, message = explain(exc, model, data)
        fail(lines, path + where, message)


def explain(exc: ValidationError, model: type[BaseModel], data: Any) -> tuple[Key, str]:
    """The first problem: where it is (within ``data``) and what to do."""
    error = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")  # a misspelt key explains a missing one
    loc: Key = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldProblem):
        return _within(data, loc + cause.path), str(cause)
    if error["type"] == "extra_forbidden":
        return _within(data, loc), unknown_key(str(loc[-1]), _fields(model, loc[:-1]))
    if error["type"] == "missing":
        return _within(data, loc[:-1]) + loc[-1:], f"required; add {loc[-1]}: ..."
    if error["type"] in ("model_type", "dict_type"):
        return _within(data, loc), f"must be a mapping (key: value, ...), not {json.dumps(error['input'], default=str)}"
    if error["type"] == "value_error":  # raised by a validator here: says it all
        return _within(data, loc), str(error["msg"]).removeprefix("Value error, ")
    return _within(data, loc), f"{error['msg']} (got {json.dumps(error['input'], default=str)})"


def _within(data: Any, loc: Key) -> Key:
    """The part of a pydantic location that names values in the data (not union members)."""
    path: Key = ()
    for part in loc:
        if (isinstance(data, dict) and part in data) or (isinstance(data, list) and isinstance(part, int)):
            path, data = (*path, part), data[part]  # type: ignore[index]
        else:
            break
    return path


def _fields(model: type[BaseModel], loc: Key) -> list[str]:
    for part in loc:
        if isinstance(part, str) and part in model.model_fields:
            annotation = model.model_fields[part].annotation
            model = next(
                t for t in (annotation, *get_args(annotation)) if isinstance(t, type) and issubclass(t, BaseModel)
            )
    return list(model.model_fields)
