"""The plugin contract: `@job` turns a typed function into a JobSpec; `discover` loads plugins.

A job's signature is its schema. Parameters annotated with a media type (`Image`, `Audio`,
...) are input artifacts; every other parameter is a JSON param validated by pydantic. A bad
signature is refused when the plugin loads, with the plugin's and the parameter's name.
"""

from __future__ import annotations

import dataclasses
import inspect
import traceback
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import annotated_types
from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model
from pydantic.fields import FieldInfo

from stablecore.context import Context
from stablecore.errors import PluginError
from stablecore.media import media_kind
from stablecore.modelfiles import declared

ENTRY_POINT_GROUP = "stablecore.plugins"
SPEC_ATTR = "__stablecore_job__"


@dataclass
class InputSpec:
    kind: str
    required: bool
    description: str | None = None
    many: bool = False  # a list of artifacts, in order


@dataclass
class JobSpec:
    """Everything the engine needs to know about one job; `schema()` is what clients see."""

    fn: Callable[..., Any]
    name: str
    description: str
    gpu: bool = False
    memory_mb: float = 0
    batch: tuple[str, ...] | None = None
    batch_max: int | None = None
    model_param: str | None = None
    timeout: float | None = None
    deterministic: bool = True  # equal params and inputs give equal outputs: cacheable
    plugin: str = ""
    version: str = ""
    takes_ctx: bool = False
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    many_outputs: set[str] = field(default_factory=set)  # outputs that are lists
    json_outputs: dict[str, TypeAdapter] = field(default_factory=dict)  # turn values into JSON
    single_output: bool = True
    params_model: type[BaseModel] | None = None

    @property
    def full_name(self) -> str:
        return f"{self.plugin}.{self.name}"

    def schema(self) -> dict[str, Any]:
        assert self.params_model is not None
        return {
            "name": self.full_name, "plugin": self.plugin, "version": self.version,
            "description": self.description,
            "params": self.params_model.model_json_schema(),
            "inputs": {k: dataclasses.asdict(v) for k, v in self.inputs.items()},
            "outputs": {k: self._output_schema(k, v) for k, v in self.outputs.items()},
            "resources": {"gpu": self.gpu, "memory_mb": self.memory_mb},
            "batch": list(self.batch) if self.batch is not None else None,
            "batch_max": self.batch_max, "model_param": self.model_param,
            "timeout": self.timeout, "deterministic": self.deterministic,
        }


    def _output_schema(self, name: str, kind: str) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": kind, "many": name in self.many_outputs}
        if name in self.json_outputs:
            out["schema"] = self.json_outputs[name].json_schema()
        return out


def job(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str = "",
    gpu: bool = False, memory_mb: float = 0, batch: tuple[str, ...] | None = None,
    batch_max: int | None = None, model_param: str | None = None, timeout: float | None = None,
    deterministic: bool = True,
) -> Any:
    """Declare a job. `batch` names the params whose equal values let queued jobs run together:
    the function is then called with a list per parameter and must return a list.
    `model_param` names the param that selects a model, for routing to a warm worker.
    `deterministic=False` (a job that reads the clock or the network) is never answered from
    a workflow's cache."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        spec = JobSpec(f, name or f.__name__, description or inspect.getdoc(f) or "", gpu,
                       memory_mb, tuple(batch) if batch is not None else None, batch_max,
                       model_param, timeout, deterministic)
        setattr(f, SPEC_ATTR, spec)
        return f

    return wrap(fn) if fn is not None else wrap


def inspect_job(spec: JobSpec, plugin: str) -> None:
    """Read the signature into inputs, params and outputs; raise PluginError if it is bad."""
    where = f"plugin {plugin!r}, job {spec.name!r}"
    try:
        hints = typing.get_type_hints(spec.fn, include_extras=True)
    except Exception as e:
        raise PluginError(f"{where}: cannot resolve annotations: {e}") from e
    params = list(inspect.signature(spec.fn).parameters.values())
    if params and hints.get(params[0].name) is Context:
        spec.takes_ctx = True
        params = params[1:]
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise PluginError(f"{where}: *{p.name} is not allowed; name every parameter")
        if p.name not in hints:
            raise PluginError(f"{where}: parameter {p.name!r} has no type annotation")
        annotation, default = hints[p.name], p.default
        media = media_kind(annotation)
        if media.kind is not None:
            info = default if isinstance(default, FieldInfo) else None
            spec.inputs[p.name] = InputSpec(
                media.kind, not media.optional and default is not None,
                info.description if info else None, media.many)
            continue
        _check_default(where, p.name, annotation, default)
        fields[p.name] = (annotation, ... if default is p.empty else default)
    unknown = set(spec.batch or ()) | ({spec.model_param} if spec.model_param else set())
    if unknown - set(fields):
        raise PluginError(f"{where}: batch/model_param name unknown params {unknown - set(fields)}")
    try:
        spec.params_model = create_model(f"{plugin}_{spec.name}_params",
                                         __config__=ConfigDict(extra="forbid"), **fields)
        spec.params_model.model_json_schema()
    except Exception as e:
        raise PluginError(f"{where}: params cannot form a JSON schema: {e}") from e
    _read_outputs(spec, where, hints.get("return"))


def _check_default(where: str, name: str, annotation: Any, default: Any) -> None:
    if default is inspect.Parameter.empty:
        return
    info = default if isinstance(default, FieldInfo) else None
    if info is not None:
        bounds = {type(m): m for m in info.metadata}
        lo = bounds.get(annotated_types.Ge) or bounds.get(annotated_types.Gt)
        hi = bounds.get(annotated_types.Le) or bounds.get(annotated_types.Lt)
        if lo is not None and hi is not None:
            lo_v, hi_v = (getattr(b, type(b).__name__.lower()) for b in (lo, hi))
            if lo_v > hi_v:
                raise PluginError(f"{where}: parameter {name!r} has a lower bound {lo_v} "
                                  f"above its upper bound {hi_v}")
        if info.is_required():
            return
        value = info.get_default(call_default_factory=True)
        annotation = typing.Annotated[annotation, info]
    else:
        value = default
    try:
        TypeAdapter(annotation).validate_python(value)
    except Exception as e:
        raise PluginError(f"{where}: default of parameter {name!r} is invalid: {e}") from e


def _read_outputs(spec: JobSpec, where: str, ret: Any) -> None:
    """Outputs are media, or plain JSON values (int, str, dict, list[float], a pydantic model,
    ...): one of them, or the fields of a dataclass/NamedTuple."""
    if ret is None:
        raise PluginError(f"{where}: the return annotation is missing (a media type, a JSON "
                          "type, a dataclass/NamedTuple of them, or None)")
    if ret is type(None):
        spec.single_output = False
        return
    media = media_kind(ret)
    if media.kind is None and isinstance(ret, type) and (dataclasses.is_dataclass(ret)
                                                         or hasattr(ret, "_fields")):
        for out_name, ann in typing.get_type_hints(ret, include_extras=True).items():
            _add_output(spec, where, out_name, ann)
        spec.single_output = False
        return
    _add_output(spec, where, media.kind or "json", ret)


def _add_output(spec: JobSpec, where: str, name: str, annotation: Any) -> None:
    media = media_kind(annotation)
    if media.kind is not None:
        spec.outputs[name] = media.kind
        if media.many:
            spec.many_outputs.add(name)
        return
    try:
        adapter = TypeAdapter(annotation)
        adapter.json_schema()
    except Exception as e:
        raise PluginError(f"{where}: output {name!r} is neither a media type nor a JSON type "
                          f"({annotation!r}): {e}") from e
    spec.outputs[name] = "json"
    spec.json_outputs[name] = adapter


def specs_in_module(module: ModuleType, plugin: str, version: str,
                    ) -> tuple[list[JobSpec], dict[str, str]]:
    """The module's good jobs, and the bad ones' errors by job name: one bad job does not
    keep the others from loading."""
    specs, errors, found = [], {}, False
    for value in vars(module).values():
        spec = getattr(value, SPEC_ATTR, None)
        if isinstance(spec, JobSpec) and getattr(value, "__module__", None) == module.__name__:
            found = True
            spec.plugin, spec.version = plugin, version
            try:
                inspect_job(spec, plugin)
            except PluginError as e:
                errors[spec.name] = e.message
                continue
            specs.append(spec)
    if not found:
        raise PluginError(f"plugin {plugin!r} ({module.__name__}) declares no @job functions")
    return specs, errors


@dataclass
class PluginInfo:
    name: str
    module: str
    version: str
    jobs: list[str] = field(default_factory=list)
    error: str | None = None
    job_errors: dict[str, str] = field(default_factory=dict)  # a bad job's name -> why
    models: list[dict[str, Any]] = field(default_factory=list)  # its MODEL_FILES, as dicts


def discover(eps: list[EntryPoint] | None = None) -> tuple[dict[str, JobSpec], list[PluginInfo]]:
    """Import every plugin in the entry-point group; one that fails is reported, not fatal."""
    if eps is None:
        eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    specs: dict[str, JobSpec] = {}
    plugins = []
    for ep in eps:
        version = ep.dist.version if ep.dist is not None else ""
        info = PluginInfo(ep.name, ep.value, version)
        plugins.append(info)
        try:
            module = ep.load()
            info.models = [m.to_dict() for m in declared(module, ep.name)]
            good, info.job_errors = specs_in_module(module, ep.name, version)
            for spec in good:
                specs[spec.full_name] = spec
                info.jobs.append(spec.full_name)
            if not good:
                info.error = "; ".join(info.job_errors.values())
        except PluginError as e:
            info.error = e.message
        except BaseException as e:  # a plugin's import may raise anything, even SystemExit
            last = traceback.format_exception_only(e)[-1].strip()
            info.error = f"import failed: {last}"
    return specs, plugins
