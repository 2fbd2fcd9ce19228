import pytest

from stablecore.engine.catalog import Catalog
from stablecore.errors import InvalidParams, NotFound


def spec(name: str, batch: list[str] | None = None, model_param: str | None = None) -> dict:
    return {"name": name, "plugin": name.split(".")[0], "inputs": {}, "batch": batch,
            "model_param": model_param, "timeout": None,
            "params": {"type": "object", "additionalProperties": False,
                       "properties": {"size": {"type": "integer", "default": 8, "maximum": 64},
                                      "model": {"type": "string", "default": "base"}}}}


def test_workers_contribute_and_leave() -> None:
    catalog = Catalog()
    catalog.update("w0", [spec("a.one")], [{"name": "a", "error": None},
                                          {"name": "b", "error": "ImportError: x"}])
    catalog.update("w-b", [spec("b.two")], [{"name": "b", "error": None}])
    assert set(catalog.specs) == {"a.one", "b.two"}
    assert {p["name"]: p["error"] for p in catalog.plugins} == {"a": None, "b": None}
    catalog.forget("w-b")
    assert set(catalog.specs) == {"a.one"}
    assert catalog.plugins[1]["error"] == "ImportError: x"
    with pytest.raises(NotFound):
        catalog.check("b.two", {}, {})


def test_check_fills_defaults_and_derives_routing_keys() -> None:
    catalog = Catalog()
    catalog.update("w0", [spec("a.one", batch=["size"], model_param="model")], [])
    checked = catalog.check("a.one", {"size": 16}, {})
    assert checked.params == {"size": 16, "model": "base"}
    assert checked.model_key == "a/base" and checked.batch_key == "a.one[16]"
    with pytest.raises(InvalidParams) as e:
        catalog.check("a.one", {"size": 99}, {})
    assert e.value.fields["field"] == "params.size"
