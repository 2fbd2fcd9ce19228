"""Tab completion in the shell: commands, jobs, `param=` names, choices, input paths."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from stablecore.cli.catalog import Catalog, choices, describe


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
