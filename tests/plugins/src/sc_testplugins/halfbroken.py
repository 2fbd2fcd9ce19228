"""A plugin with one good job and one bad one: the good one must still load."""

from __future__ import annotations

from stablecore import Text, job


class NotJson:
    pass


@job(description="Works.")
def fine() -> Text:
    return "fine"


@job(description="Its parameter's type cannot form a JSON schema.")
def bad(thing: NotJson) -> Text:
    return "never"
