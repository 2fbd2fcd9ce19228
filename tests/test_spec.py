from dataclasses import dataclass
from typing import Literal

import pytest

from stablecore import Audio, Context, Field, Image, Mask, Numbers, Text, job
from stablecore.errors import PluginError
from stablecore.spec import JobSpec, inspect_job, specs_in_module


def inspected(fn) -> JobSpec:
    spec = fn.__stablecore_job__
    inspect_job(spec, "demo")
    spec.plugin = "demo"
    return spec


def test_signature_becomes_schema() -> None:
    @dataclass
    class Out:
        image: Image
        curve: Numbers

    @job(description="Demo job.", gpu=True, memory_mb=512, model_param="model")
    def demo(ctx: Context, image: Image, mask: Mask | None = None,
             strength: float = Field(0.5, ge=0, le=1, description="how much"),
             mode: Literal["a", "b"] = "a", label: str | None = None,
             model: str = "base") -> Out:
        raise NotImplementedError

    spec = inspected(demo)
    schema = spec.schema()
    assert spec.takes_ctx
    assert schema["name"] == "demo.demo" and schema["description"] == "Demo job."
    assert schema["inputs"] == {
        "image": {"kind": "image", "required": True, "description": None, "many": False},
        "mask": {"kind": "mask", "required": False, "description": None, "many": False}}
    props = schema["params"]["properties"]
    assert props["strength"] == {"default": 0.5, "description": "how much", "maximum": 1,
                                 "minimum": 0, "title": "Strength", "type": "number"}
    assert props["mode"]["enum"] == ["a", "b"]
    assert schema["params"]["additionalProperties"] is False
    assert schema["outputs"] == {"image": {"kind": "image", "many": False},
                                 "curve": {"kind": "numbers", "many": False}}
    assert schema["resources"] == {"gpu": True, "memory_mb": 512}


def test_lists_of_media() -> None:
    @dataclass
    class Out:
        frames: list[Image]
        audio: Audio | None

    @job
    def clip(frames: list[Image], masks: list[Mask] | None = None, names: list[str] = []) -> Out:  # noqa: B006
        raise NotImplementedError

    @job
    def split(image: Image) -> list[Image]:
        raise NotImplementedError

    schema = inspected(clip).schema()
    assert schema["inputs"]["frames"] == {"kind": "image", "required": True,
                                          "description": None, "many": True}
    assert schema["inputs"]["masks"]["many"] and not schema["inputs"]["masks"]["required"]
    assert schema["params"]["properties"]["names"]["type"] == "array"  # not media: a param
    assert schema["outputs"] == {"frames": {"kind": "image", "many": True},
                                 "audio": {"kind": "audio", "many": False}}
    assert inspected(split).schema()["outputs"] == {"image": {"kind": "image", "many": True}}


def test_single_output_is_named_by_its_kind() -> None:
    @job
    def talk(words: int = 3) -> Text:
        """Docstring is the description."""
        return "x"

    @job
    def record(seconds: float) -> Audio:
        raise NotImplementedError

    assert inspected(talk).schema()["outputs"] == {"text": {"kind": "text", "many": False}}
    assert inspected(talk).description == "Docstring is the description."
    assert inspected(record).schema()["params"]["required"] == ["seconds"]


@pytest.mark.parametrize("source, message", [
    ("def f(*images: int) -> Text: ...", "\\*images is not allowed"),
    ("def f(x) -> Text: ...", "parameter 'x' has no type annotation"),
    ("def f(x: int): ...", "return annotation is missing"),
    ("class Foo: ...\ndef f(x: int) -> Foo: ...", "neither a media type nor a JSON type"),
    ("def f(x: int = Field(5, ge=10, le=1)) -> Text: ...", "lower bound 10 above its upper bound 1"),
    ("def f(x: int = Field(50, ge=0, le=10)) -> Text: ...", "default of parameter 'x' is invalid"),
    ("def f(x: Literal['a', 'b'] = 'c') -> Text: ...", "default of parameter 'x' is invalid"),
    ("class Foo: ...\ndef f(x: Foo) -> Text: ...", "cannot form a JSON schema"),
])
def test_bad_signatures_are_refused_at_load(source: str, message: str) -> None:
    namespace: dict = {"Text": Text, "Field": Field, "Literal": Literal}
    exec(source, namespace)
    spec = job(namespace["f"]).__stablecore_job__
    with pytest.raises(PluginError, match=message) as info:
        inspect_job(spec, "demo")
    assert "plugin 'demo', job 'f'" in str(info.value)


def test_batch_and_model_params_must_exist() -> None:
    @job(batch=("size", "colour"))
    def f(size: int = 8) -> Text:
        raise NotImplementedError

    with pytest.raises(PluginError, match="colour"):
        inspect_job(f.__stablecore_job__, "demo")


def test_a_module_without_jobs_is_an_error() -> None:
    import types

    with pytest.raises(PluginError, match="declares no @job"):
        specs_in_module(types.ModuleType("empty"), "empty", "1.0")


def test_plain_values_are_json_outputs() -> None:
    @dataclass
    class Stats:
        image: Image
        mean: float
        hist: list[float]

    def count(text: str) -> int: ...
    def table() -> dict[str, list[float]]: ...
    def stats() -> Stats: ...

    for fn in (count, table, stats):
        job(fn)
    assert inspected(count).schema()["outputs"] == {
        "json": {"kind": "json", "many": False, "schema": {"type": "integer"}}}
    assert inspected(table).outputs == {"json": "json"}
    outs = inspected(stats).schema()["outputs"]
    assert outs["image"] == {"kind": "image", "many": False}
    assert outs["hist"]["kind"] == "json" and not outs["hist"]["many"]
    assert outs["hist"]["schema"] == {"type": "array", "items": {"type": "number"}}


def test_one_bad_job_does_not_sink_its_plugin() -> None:
    import types

    module = types.ModuleType("half")
    exec("from stablecore import Text, job\n"
         "class Foo: ...\n"
         "@job\ndef good() -> Text: ...\n"
         "@job\ndef bad(x: Foo) -> Text: ...\n", vars(module))
    specs, errors = specs_in_module(module, "half", "1.0")
    assert [s.name for s in specs] == ["good"]
    assert list(errors) == ["bad"] and "cannot form a JSON schema" in errors["bad"]


def test_numbers_stays_one_output_though_it_is_a_dataclass() -> None:
    @job
    def series() -> Numbers: ...

    assert inspected(series).outputs == {"numbers": "numbers"}
