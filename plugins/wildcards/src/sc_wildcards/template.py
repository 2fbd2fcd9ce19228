"""Prompt templates: parse `{a|b}` alternatives and `__name__` wildcards, then expand them.

Grammar (a backslash escapes the next character):
    template  := (text | choice | wildcard)*
    choice    := "{" [count "$$"] template ("|" template)* "}"   count distinct picks, joined ", "
    wildcard  := "__" name "__"      name: letters, digits, _ - and / for subfolders
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

WILDCARD = re.compile(r"__([\w\-/]+?)__")
COUNT = re.compile(r"(\d+)\$\$")
MAX_DEPTH = 32


@dataclass(frozen=True)
class Plain:
    text: str


@dataclass(frozen=True)
class Wildcard:
    name: str


@dataclass(frozen=True)
class Choice:
    options: tuple[tuple[Node, ...], ...]
    count: int = 1


Node = Plain | Wildcard | Choice


def parse(text: str) -> tuple[Node, ...]:
    """The template as a tree; raises ValueError naming the position of a syntax error."""
    nodes, end, stop = _parse_seq(text, 0, in_choice=False)
    if stop is not None:  # only `}` can stop the top level early
        raise ValueError(f"unmatched '}}' at position {end} in {text!r}")
    return nodes


def _parse_seq(text: str, i: int, in_choice: bool) -> tuple[tuple[Node, ...], int, str | None]:
    """Parse until `|`/`}` (inside a choice) or the end; return (nodes, index, stop char)."""
    nodes: list[Node] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            nodes.append(Plain("".join(buf)))
            buf.clear()

    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            buf.append(text[i + 1])
            i += 2
        elif c == "{":
            flush()
            choice, i = _parse_choice(text, i)
            nodes.append(choice)
        elif c == "}" or (c == "|" and in_choice):
            flush()
            return tuple(nodes), i, c
        elif (m := WILDCARD.match(text, i)) is not None:
            flush()
            nodes.append(Wildcard(_check_name(m.group(1))))
            i = m.end()
        else:
            buf.append(c)
            i += 1
    flush()
    return tuple(nodes), i, None


def _parse_choice(text: str, start: int) -> tuple[Choice, int]:
    i, count = start + 1, 1
    if (m := COUNT.match(text, i)) is not None:
        count, i = int(m.group(1)), m.end()
        if count < 1:
            raise ValueError(f"a choice must pick at least 1 option (position {start})")
    options = []
    while True:
        seq, i, stop = _parse_seq(text, i, in_choice=True)
        options.append(seq)
        if stop is None:
            raise ValueError(f"unclosed '{{' at position {start} in {text!r}")
        i += 1
        if stop == "}":
            return Choice(tuple(options), count), i


def _check_name(name: str) -> str:
    if any(part == "" for part in name.split("/")):
        raise ValueError(f"bad wildcard name {name!r}: empty path part")
    return name


class Expander:
    """Expands parsed templates with one random generator; `lookup(name)` gives a list's lines."""

    def __init__(self, lookup: Callable[[str], list[str]], rng: np.random.Generator) -> None:
        self.lookup = lookup
        self.rng = rng

    def expand(self, nodes: tuple[Node, ...], stack: tuple[str, ...] = ()) -> str:
        return "".join(self._node(node, stack) for node in nodes)

    def _node(self, node: Node, stack: tuple[str, ...]) -> str:
        if isinstance(node, Plain):
            return node.text
        if isinstance(node, Choice):
            k = min(node.count, len(node.options))
            picks = self.rng.choice(len(node.options), size=k, replace=False)
            return ", ".join(self.expand(node.options[p], stack) for p in sorted(picks))
        if node.name in stack:
            raise ValueError(f"wildcard cycle: {' -> '.join((*stack, node.name))}")
        if len(stack) >= MAX_DEPTH:
            raise ValueError(f"wildcards nested deeper than {MAX_DEPTH}: {' -> '.join(stack)}")
        lines = self.lookup(node.name)
        line = lines[int(self.rng.integers(len(lines)))]
        return self.expand(parse(line), (*stack, node.name))
