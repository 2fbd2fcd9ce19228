"""Model files a plugin declares: downloaded once into a shared cache, resumed, verified, freed.

A plugin lists what it needs at module level:

    MODEL_FILES = [ModelFile(repo_id="org/model", filename="model.safetensors", sha256="...")]

Hub files go through `huggingface_hub.hf_hub_download`, so they land in the Hugging Face cache
layout that diffusers and transformers read too. URL files go to `<root>/urls/<sha256>/<name>`,
downloaded into a `.part` file that a later pull resumes with an HTTP Range request. Nothing
here touches the network until `pull` is called.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

import platformdirs

from stablecore.errors import StableCoreError

ENV_CACHE = "STABLECORE_MODELS_CACHE"
ENV_HOME = "STABLECORE_MODELS_HOME"  # the server's models folder, set for its workers
CHUNK = 1 << 20
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[\w][\w.\-+]*$")

Progress = Callable[[int, "int | None"], None]
"""Called with (bytes done, total bytes or None) as a download goes."""


class ModelFileError(StableCoreError):
    """A model file cannot be declared, downloaded, verified or found in the cache."""


@dataclass(frozen=True)
class ModelFile:
    """One file a plugin needs: a Hugging Face hub file (repo_id + filename) or a URL.

    `sha256` is checked after every download (required for URL files, whose cache folder is
    named by it); `size` in bytes, when given, is checked too and shown before a download.
    """

    url: str | None = None
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    sha256: str | None = None
    size: int | None = None
    licence: str = ""

    def __post_init__(self) -> None:
        if (self.url is None) == (self.repo_id is None):
            raise ModelFileError("a ModelFile needs either url= or repo_id= (and not both)")
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", self.sha256.lower())
            if not SHA256_RE.match(self.sha256):
                raise ModelFileError(f"{self.name}: sha256 must be 64 hex digits")
        if self.size is not None and self.size < 0:
            raise ModelFileError(f"{self.name}: size must be a byte count >= 0")
        if self.repo_id is not None:
            if not self.filename:
                raise ModelFileError(f"hub file of {self.repo_id!r} needs filename=")
            return
        parts = urlsplit(self.url or "")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ModelFileError(f"model file URL {self.url!r} is not an http(s) URL")
        if self.filename is None:
            object.__setattr__(self, "filename", unquote(parts.path.rsplit("/", 1)[-1]))
        if not NAME_RE.match(self.filename or ""):
            raise ModelFileError(f"{self.url}: give a plain file name with filename= "
                                 f"(got {self.filename!r})")
        if self.sha256 is None:
            raise ModelFileError(f"{self.url}: a URL file needs its sha256")

    @property
    def name(self) -> str:
        """What users see: `org/model/file.safetensors` or the URL file's name."""
        return f"{self.repo_id}/{self.filename}" if self.repo_id else str(self.filename or self.url)

    @property
    def source(self) -> str:
        return self.url or f"hf://{self.repo_id}/{self.filename}@{self.revision or 'main'}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelFile:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class FileCache:
    """Where model files live. `hub` None means huggingface_hub's own cache (HF_HUB_CACHE)."""

    root: Path
    hub: Path | None = None

    def url_path(self, file: ModelFile) -> Path:
        assert file.sha256 and file.filename
        return self.root / "urls" / file.sha256 / file.filename


def models_cache(environ: Mapping[str, str], root: Path | None = None) -> FileCache:
    """The cache: `root`, else $STABLECORE_MODELS_CACHE (hub files under it too), else defaults.

    By default URL files go to the user cache dir and hub files to the Hugging Face cache,
    which diffusers and transformers share; a chosen root keeps both under one folder.
    """
    chosen = root or (Path(environ[ENV_CACHE]) if environ.get(ENV_CACHE) else None)
    if chosen is not None:
        return FileCache(chosen, chosen / "hub")
    return FileCache(platformdirs.user_cache_path("stable-core") / "models")


def models_folder(plugin: str, environ: Mapping[str, str]) -> Path | None:
    """The folder where a user drops model files for `plugin` (`data/models/<plugin>`),
    created on first use; None outside a server's worker. A rescan picks up new files."""
    home = environ.get(ENV_HOME)
    if not home:
        return None
    folder = Path(home) / plugin
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def declared(module: ModuleType, plugin: str = "") -> list[ModelFile]:
    """A plugin module's `MODEL_FILES` (ModelFile objects or dicts), checked."""
    items = getattr(module, "MODEL_FILES", None) or []
    try:
        return [m if isinstance(m, ModelFile) else ModelFile.from_dict(m) for m in items]
    except (TypeError, AttributeError) as e:
        raise ModelFileError(f"plugin {plugin or module.__name__}: bad MODEL_FILES entry: {e}") \
            from None


def local_path(file: ModelFile, cache: FileCache) -> Path | None:
    """The cached file, or None if it has not been pulled (completely) yet."""
    if file.url is not None:
        path = cache.url_path(file)
        return path if path.is_file() else None
    found = _hf().try_to_load_from_cache(file.repo_id, file.filename, cache_dir=cache.hub,
                                         revision=file.revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def require(file: ModelFile, cache: FileCache, plugin: str) -> Path:
    """The cached file, or an error that tells the user how to get it."""
    path = local_path(file, cache)
    if path is None:
        raise ModelFileError(f"model file {file.name} of plugin {plugin!r} is not downloaded: "
                             f"run `stable-core models pull {plugin}`")
    return path


def pull(file: ModelFile, cache: FileCache, progress: Progress | None = None) -> Path:
    """Download `file` into the cache unless it is there; verify it; return its path."""
    report = progress or (lambda done, total: None)
    path = local_path(file, cache)
    if path is None:
        path = _pull_url(file, cache, report) if file.url else _pull_hub(file, cache, report)
    size = path.stat().st_size
    report(size, size)
    return path


def remove(file: ModelFile, cache: FileCache) -> int:
    """Delete the cached file (and any partial download); return the bytes freed."""
    freed = 0
    if file.url is not None:
        path = cache.url_path(file)
        for p in (path, _part(path)):
            if p.is_file():
                freed += p.stat().st_size
                p.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        return freed
    path = local_path(file, cache)  # .../snapshots/<commit>/<filename>, a link to its blob
    if path is None:
        return 0
    blob = path.resolve()
    freed = blob.stat().st_size
    path.unlink()
    snapshots = path.parents[len(Path(str(file.filename)).parts)]  # other revisions' links
    still_used = any(p.is_symlink() and p.resolve() == blob for p in snapshots.rglob("*"))
    if blob != path and blob.exists() and not still_used:
        blob.unlink()
    return freed


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One download per file at a time, across processes (CLI and server alike)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _pull_url(file: ModelFile, cache: FileCache, report: Progress) -> Path:
    import httpx  # only a download needs it

    dest = cache.url_path(file)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.parent):
        if dest.is_file():  # another process finished it while we waited
            return dest
        part = _part(dest)
        have = part.stat().st_size if part.is_file() else 0
        hasher = hashlib.sha256()
        if have:
            with part.open("rb") as f:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
        headers = {"Accept-Encoding": "identity"}  # byte offsets must be the file's
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with httpx.stream("GET", str(file.url), headers=headers, follow_redirects=True,
                              timeout=httpx.Timeout(30.0, connect=10.0)) as r:
                if r.status_code == 416 and have:  # nothing left to fetch: check what we have
                    pass
                elif r.status_code not in (200, 206):
                    raise ModelFileError(f"cannot download {file.name} from {file.url}: "
                                         f"HTTP {r.status_code}")
                else:
                    if r.status_code == 200 and have:  # the server ignored Range: start over
                        have, hasher = 0, hashlib.sha256()
                    length = r.headers.get("Content-Length")
                    total = have + int(length) if length else file.size
                    with part.open("ab" if have else "wb") as f:
                        done = have
                        report(done, total)
                        for chunk in r.iter_raw():
                            f.write(chunk)
                            hasher.update(chunk)
                            done += len(chunk)
                            report(done, total)
        except httpx.HTTPError as e:
            kept = f" ({part.stat().st_size} bytes kept: pull again to resume)" \
                if part.is_file() and part.stat().st_size else ""
            raise ModelFileError(f"cannot download {file.name} from {file.url}: "
                                 f"{type(e).__name__}: {e or 'connection failed'}{kept}") from None
        _verify(file, part, hasher.hexdigest())
        part.replace(dest)
    return dest


def _verify(file: ModelFile, path: Path, digest: str | None = None) -> None:
    """Size and sha256 as declared, or the file is deleted and the error says why."""
    size = path.stat().st_size
    problem = None
    if file.size is not None and size != file.size:
        problem = f"size {size} bytes, expected {file.size}"
    elif file.sha256 is not None:
        digest = digest or sha256_of(path)
        if digest != file.sha256:
            problem = f"sha256 {digest}, expected {file.sha256}"
    if problem:
        path.unlink()
        raise ModelFileError(f"{file.name} from {file.source} failed verification ({problem}); "
                             f"the download was deleted")


def _hf() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ModelFileError("Hugging Face hub files need the huggingface_hub package: "
                             "pip install huggingface_hub") from None
    return huggingface_hub


def _pull_hub(file: ModelFile, cache: FileCache, report: Progress) -> Path:
    hf = _hf()
    from tqdm.std import tqdm

    class Reporter(tqdm):  # huggingface_hub reports bytes through a tqdm-like class
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **{**kw, "disable": True})
            self.done = kw.get("initial") or 0

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            report(self.done, self.total)
            return None

    try:
        found = hf.hf_hub_download(file.repo_id, file.filename, revision=file.revision,
                                   cache_dir=cache.hub, tqdm_class=Reporter)
    except Exception as e:  # offline, unknown repo, HTTP errors: all say what failed
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"cannot download {file.name} ({file.source}) from the Hugging "
                             f"Face hub: {type(e).__name__}: {reason}") from None
    path = Path(found)
    try:
        _verify(file, path.resolve())
    except ModelFileError:
        path.unlink(missing_ok=True)  # the snapshot link to the deleted blob
        raise
    return path
