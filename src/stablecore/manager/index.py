"""Where published plugins are found: index files (JSON) and GitHub's `stable-core-plugin` topic.

The merged list is cached, so search works offline with what was last seen.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

GITHUB_SEARCH = "https://api.github.com/search/repositories"
TOPIC = "stable-core-plugin"


@dataclass
class Published:
    name: str
    source: str
    description: str = ""
    topics: list[str] = field(default_factory=list)
    stars: int = 0
    origin: str = ""


def _read(location: str) -> object:
    if location.startswith(("http://", "https://")):
        response = httpx.get(location, timeout=15, follow_redirects=True)
        response.raise_for_status()
        return response.json()
    return json.loads(Path(location).read_text())


def _from_index(location: str) -> list[Published]:
    data = _read(location)
    items = data.get("plugins", []) if isinstance(data, dict) else data
    return [Published(i["name"], i["source"], i.get("description", ""), i.get("topics", []),
                      int(i.get("stars", 0)), location) for i in items]  # type: ignore[union-attr]


def _from_github() -> list[Published]:
    response = httpx.get(GITHUB_SEARCH, params={"q": f"topic:{TOPIC}", "per_page": 100},
                         headers={"Accept": "application/vnd.github+json"}, timeout=15)
    response.raise_for_status()
    out = []
    for repo in response.json().get("items", []):
        name = repo["name"].lower().removeprefix("stable-core-").replace("-", "_")
        out.append(Published(name, repo["clone_url"], repo.get("description") or "",
                             repo.get("topics", []), repo.get("stargazers_count", 0), "github"))
    return out


def load(indexes: list[str], github: bool, cache: Path,
         warn: Callable[[str], None] = print) -> list[Published]:
    """Every reachable source, merged by name (first wins); unreachable ones from the cache."""
    cached: dict[tuple[str, str], Published] = {}
    if cache.is_file():
        cached = {(p["origin"], p["name"]): Published(**p) for p in json.loads(cache.read_text())}
    found: list[Published] = []
    sources = [(loc, lambda loc=loc: _from_index(loc)) for loc in indexes]
    if github:
        sources.append(("github", _from_github))
    for origin, fetch in sources:
        try:
            found += fetch()
        except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError) as e:
            old = [p for (o, _), p in cached.items() if o == origin]
            warn(f"plugin index {origin} unreachable ({type(e).__name__}: {e}); "
                 f"using {len(old)} cached entries")
            found += old
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps([asdict(p) for p in found], indent=1))
    merged: dict[str, Published] = {}
    for plugin in found:
        merged.setdefault(plugin.name, plugin)
    return list(merged.values())


def search(plugins: list[Published], text: str) -> list[Published]:
    words = text.lower().split()
    return [p for p in plugins
            if all(w in f"{p.name} {p.description} {' '.join(p.topics)}".lower() for w in words)]
