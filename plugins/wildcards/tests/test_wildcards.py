"""Wildcards through a real server: reproducible per seed, every alternative reachable."""

from __future__ import annotations

import json
import re
from pathlib import Path

from stablecore.client import Client


def expand(client: Client, tmp_path: Path, **params: object) -> tuple[list[str], list[int]]:
    job = client.run("wildcards.expand", params)
    assert job["state"] == "succeeded", job["error"]
    text = client.download(job["outputs"]["text"]["id"], tmp_path / "text.txt").read_text()
    seeds = json.loads(client.download(job["outputs"]["seeds"]["id"],
                                       tmp_path / "seeds.json").read_text())
    return text.split(params.get("separator", "\n")), [int(v) for v in seeds["values"]]


def test_same_seed_same_prompts_and_each_seed_reproduces_its_line(
        stablecore_client: Client, tmp_path: Path) -> None:
    template = "a {big|small} __color__ __animal__ at __time_of_day__"
    first, seeds = expand(stablecore_client, tmp_path, template=template, n=12, seed=1234)
    again, _ = expand(stablecore_client, tmp_path, template=template, n=12, seed=1234)
    other, _ = expand(stablecore_client, tmp_path, template=template, n=12, seed=99)
    assert first == again and len(first) == 12
    assert first != other
    assert seeds == list(range(1234, 1246))
    alone, _ = expand(stablecore_client, tmp_path, template=template, n=1, seed=seeds[5])
    assert alone == [first[5]]
    assert all("__" not in p and "{" not in p for p in first)


def test_random_seed_is_reported_and_reproduces(stablecore_client: Client,
                                                tmp_path: Path) -> None:
    prompts, seeds = expand(stablecore_client, tmp_path, template="__place__, __mood__", n=3,
                            seed=-1)
    again, _ = expand(stablecore_client, tmp_path, template="__place__, __mood__", n=3,
                      seed=seeds[0])
    assert prompts == again


def test_every_alternative_and_list_entry_is_reached(stablecore_client: Client,
                                                     tmp_path: Path) -> None:
    prompts, _ = expand(stablecore_client, tmp_path, template="{red|green|blue}/__season__",
                        n=200, seed=7, separator=";")
    assert {p.split("/")[0] for p in prompts} == {"red", "green", "blue"}
    assert {p.split("/")[1] for p in prompts} == {"spring", "summer", "autumn", "winter"}
    picks, _ = expand(stablecore_client, tmp_path, template="{2$$a|b|c}", n=60, seed=3)
    assert set(picks) == {"a, b", "a, c", "b, c"}


def test_user_folder_nesting_and_escapes(stablecore_client: Client, tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    (lists / "fantasy").mkdir(parents=True)
    (lists / "hero.txt").write_text("# heroes\n{brave|shy} __fantasy/creature__\n\n")
    (lists / "fantasy" / "creature.txt").write_text("dragon\n{wood|sea} elf\n")
    (lists / "season.txt").write_text("monsoon\n")  # the user's list wins over the bundled one
    prompts, _ = expand(stablecore_client, tmp_path, n=40, seed=11, folder=str(lists),
                        template=r"__hero__ in __season__ \{literal\|bar\}")
    pattern = re.compile(r"(brave|shy) (dragon|wood elf|sea elf) in monsoon \{literal\|bar\}")
    assert all(pattern.fullmatch(p) for p in prompts), prompts
    assert {p.split(" in ")[0].split(" ", 1)[1] for p in prompts} == {
        "dragon", "wood elf", "sea elf"}
    listing = stablecore_client.run("wildcards.list", {"folder": str(lists)})
    assert listing["state"] == "succeeded", listing["error"]
    text = stablecore_client.download(listing["outputs"]["text"]["id"],
                                      tmp_path / "list.txt").read_text()
    assert f"__fantasy/creature__\t2\t{lists}" in text
    assert "__animal__\t" in text


def test_bad_templates_fail_with_a_clear_error(stablecore_client: Client,
                                               tmp_path: Path) -> None:
    (tmp_path / "loop.txt").write_text("again __loop__\n")
    cases = {
        "__no_such_list__": "unknown wildcard __no_such_list__; known lists: animal",
        "a {b|c": "unclosed '{' at position 2",
        "a }": "unmatched '}' at position 2",
        "__loop__": "wildcard cycle: loop -> loop",
    }
    for template, message in cases.items():
        job = stablecore_client.run("wildcards.expand",
                                    {"template": template, "folder": str(tmp_path)})
        assert job["state"] == "failed"
        assert message in job["error"], job["error"]
    job = stablecore_client.run("wildcards.expand",
                                {"template": "x", "folder": str(tmp_path / "missing")})
    assert job["state"] == "failed" and "does not exist" in job["error"]
