"""Wildcards: expand prompt templates with `__name__` lists and `{a|b|c}` alternatives."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from sc_wildcards.library import ENV_VAR, Library, folders
from sc_wildcards.template import Expander, parse
from stablecore import Context, Field, Numbers, Text, job

FOLDER_HELP = (f"a folder of extra lists (name.txt, searched before ${ENV_VAR} and the "
               "bundled lists); empty = none")


@dataclass
class Prompts:
    text: Text  # the variations, joined by `separator`
    seeds: Numbers  # one row per variation: the seed that reproduces it alone (n=1)


@job(description="Expand a prompt template: `__name__` picks a line from a wildcard list, "
                 "`{a|b|c}` picks one alternative, `{2$$a|b|c}` picks two; they nest. "
                 "The same seed gives the same prompts.")
def expand(
    ctx: Context,
    template: str = Field(..., min_length=1, description="e.g. 'a {red|blue} __animal__'"),
    n: int = Field(1, ge=1, le=1000, description="how many variations"),
    seed: int = Field(-1, ge=-1, lt=2**32, description="-1 = random (the seeds output says "
                                                      "which was used)"),
    separator: str = Field("\n", description="put between variations"),
    folder: str = Field("", description=FOLDER_HELP),
) -> Prompts:
    nodes = parse(template)
    library = Library(folders(folder, os.environ))
    base = ctx.seed(seed)
    seeds = [(base + i) % 2**32 for i in range(n)]
    prompts = []
    for i, s in enumerate(seeds):
        prompts.append(Expander(library.lines, np.random.default_rng(s)).expand(nodes))
        if n >= 100 and (i + 1) % 100 == 0:
            ctx.progress(i + 1, n)
    ctx.log.info("wildcards: seed %d, %d variation(s)", base, n)
    return Prompts(separator.join(prompts), Numbers(np.array(seeds, dtype=np.float64), ["seed"]))


@job(name="list", description="List the wildcard names that templates can use, with the "
                              "folder each is read from and its entry count.")
def list_wildcards(folder: str = Field("", description=FOLDER_HELP)) -> Text:
    library = Library(folders(folder, os.environ))
    rows = [f"__{name}__\t{len(library.lines(name))}\t{root}"
            for name, root in sorted(library.names().items())]
    return "\n".join(rows)
