"""What the shell knows of the live catalog: job schemas, typed values, and Tab completion."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

RUN_FLAGS = ("-i", "--input", "-p", "--priority")


def value_types(prop: dict[str, Any]) -> set[str]:
    """The JSON types a parameter accepts (`anyOf` for optionals included)."""
    found: set[str] = set()
    for option in [prop, *prop.get("anyOf", [])]:
        kind = option.get("type")
        found.update(kind if isinstance(kind, list) else [kind] if kind else [])
        if "enum" in option:
            found.update(type(v).__name__.replace("str", "string") for v in option["enum"])
    return found


def choices(prop: dict[str, Any]) -> list[Any]:
    """Allowed values of an enum (or boolean) parameter, else []."""
    for option in [prop, *prop.get("anyOf", [])]:
        if "enum" in option:
            return list(option["enum"])
    return [True, False] if value_types(prop) == {"boolean"} else []


def coerce(prop: dict[str, Any] | None, raw: str) -> Any:
    """A typed value from the text after `key=`: a string parameter keeps its text as is
    (`prompt=1990` stays "1990"), any other takes JSON (numbers, true, lists) or else text."""
    if prop is not None and value_types(prop) <= {"string", "null"} and raw != "null":
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def describe(prop: dict[str, Any]) -> str:
    """One line for a parameter: type, default, range or choices, description."""
    kinds = sorted(value_types(prop) - {"null"}) or ["any"]
    parts = ["|".join(kinds)]
    if "default" in prop:
        parts.append(f"= {json.dumps(prop['default'])}")
    low, high = prop.get("minimum", prop.get("exclusiveMinimum")), prop.get(
        "maximum", prop.get("exclusiveMaximum"))
    if low is not None or high is not None:
        parts.append(f"[{'' if low is None else low}..{'' if high is None else high}]")
    if options := choices(prop):
        parts.append("{" + ", ".join(json.dumps(v) for v in options) + "}")
    if prop.get("description"):
        parts.append(f"- {prop['description']}")
    return " ".join(parts)


class Catalog:
    """The jobs a server offers (GET /api/specs), looked up by name."""

    def __init__(self, specs: Iterable[dict[str, Any]] = ()) -> None:
        self.specs = {s["name"]: s for s in specs}

    def names(self) -> list[str]:
        return sorted(self.specs)

    def get(self, name: str) -> dict[str, Any] | None:
        return self.specs.get(name)

    def params(self, name: str) -> dict[str, dict[str, Any]]:
        spec = self.specs.get(name)
        return spec["params"].get("properties", {}) if spec else {}

    def inputs(self, name: str) -> dict[str, dict[str, Any]]:
        spec = self.specs.get(name)
        return spec["inputs"] if spec else {}

    def any_param(self, key: str) -> dict[str, Any] | None:
        """The schema of `key` in the first job that has it (for `set key=...`)."""
        return next((self.params(n)[key] for n in self.names() if key in self.params(n)), None)

    def all_params(self) -> list[str]:
        return sorted({k for n in self.specs for k in self.params(n)})


def split_line(text: str) -> list[str]:
    """Words of a partly typed line; the last is the word being typed ('' after a space).
    An unclosed quote counts as closed."""
    for closing in ("", '"', "'"):
        try:
            words = shlex.split(text + closing)
            break
        except ValueError:
            continue
    else:
        words = text.split()
    if not text or (text[-1].isspace() and not closing):
        words.append("")
    return words


class ShellCompleter(Completer):
    """Completes commands, job names, `param=` names, enum values and input file paths.

    `catalog()` and `recent()` are called per completion, so the completer always sees what
    the shell last fetched (it never does I/O itself: it runs on every key press)."""

    def __init__(self, commands: dict[str, str], catalog: Callable[[], Catalog],
                 recent: Callable[[], list[str]]) -> None:
        self.commands = commands
        self.catalog = catalog
        self.recent = recent
        self.paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document,
                        complete_event: CompleteEvent) -> Iterator[Completion]:
        words = split_line(document.text_before_cursor)
        word, command = words[-1], words[0]
        if len(words) == 1:
            yield from self._from(word, self.commands.items())
            return
        catalog = self.catalog()
        if command in ("run", "help") and len(words) == 2:
            yield from self._from(word, ((n, catalog.specs[n]["description"].split("\n")[0])
                                         for n in catalog.names()))
            if command == "help":
                yield from self._from(word, self.commands.items())
        elif command == "run" and len(words) > 2:
            yield from self._run_args(catalog, words[1], words[2:-1], word)
        elif command == "set":
            yield from self._value(catalog.any_param, lambda _: False, word,
                                   catalog.all_params(), words[1:-1])
        elif command in ("show", "cancel", "retry", "open") and len(words) == 2:
            yield from self._from(word, ((i, "") for i in self.recent()))

    def _run_args(self, catalog: Catalog, job: str, given: list[str],
                  word: str) -> Iterator[Completion]:
        params, inputs = catalog.params(job), catalog.inputs(job)
        if given and given[-1] in ("-i", "--input"):  # -i name=path
            yield from self._value(lambda k: None, inputs.__contains__, word, list(inputs), [])
            return
        if given and given[-1] in ("-p", "--priority"):
            return
        yield from self._value(params.get, inputs.__contains__, word,
                               [*params, *inputs], given)

    def _value(self, schema: Callable[[str], dict[str, Any] | None],
               is_input: Callable[[str], bool], word: str, keys: list[str],
               given: list[str]) -> Iterator[Completion]:
        """`key=` names not given yet, or, after `key=`, its choices or a file path."""
        key, sep, value = word.partition("=")
        if not sep:
            taken = {g.partition("=")[0] for g in given}
            for k in keys:
                if k.startswith(word) and (k not in taken or is_input(k)):
                    prop = schema(k)
                    meta = describe(prop) if prop else "input file"
                    yield Completion(k + "=", -len(word), display=k + "=", display_meta=meta)
            return
        if is_input(key):
            for c in self.paths.get_completions(Document(value), CompleteEvent()):
                yield Completion(c.text, c.start_position, display=c.display)
            return
        prop = schema(key)
        for option in choices(prop) if prop else []:
            text = option if isinstance(option, str) else json.dumps(option)
            if text.startswith(value):
                yield Completion(text + " ", -len(value), display=text, display_meta=key)

    @staticmethod
    def _from(word: str, items: Iterable[tuple[str, str]]) -> Iterator[Completion]:
        for name, meta in items:
            if name.startswith(word):
                yield Completion(name + " ", -len(word), display=name, display_meta=meta)
