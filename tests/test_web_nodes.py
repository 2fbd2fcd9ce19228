"""The node editor of the web UI (web/src/nodes.ts, Rete.js) in Debian's Chromium, against a
real server with the test plugins: nodes added from the catalog and wired by dragging between
sockets, a wrong connection refused, a run followed live with its result checked and the
cached marks of a second run, a 422 shown on the node it names, graphs saved and loaded as
files and as a named workflow (a job of its own).

The screenshot goes to a temporary folder; `STABLECORE_SCREENSHOTS=docs pytest
tests/test_web_nodes.py -k screenshot` writes docs/screenshot-nodes.png (the README's picture).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import PIL.Image
import pytest

from stablecore.client import Client
from stablecore.testing import ServerProcess, fetch_image

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 30_000  # an upper bound for waits on a loaded machine; never a timing assert

pytestmark = [
    pytest.mark.skipif(not (ROOT / "web" / "dist" / "index.html").is_file(),
                       reason="web UI not built: run `make web` (npm ci && npm run build in web/)"),
    pytest.mark.skipif(not CHROMIUM.is_file(),
                       reason="needs Debian's chromium (.ci/apt-packages.txt)"),
]




class Editor:
    """A browser tab on the node editor (`/#nodes`), recording console errors."""

    def __init__(self, browser, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1440, "height": 900},
                                           accept_downloads=True)
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("response", lambda r: r.status >= 400 and self.errors.append(
            f"{r.status} {r.request.method} {r.url}"))
        self.page.goto(url + "/#nodes")
        expect(self.page.locator(".linkstate")).to_have_attribute("data-state", "live")
        expect(self.page.locator(".nodes-canvas")).to_be_visible()

    def node(self, name: str):
        return self.page.locator(f'.sc-node[data-node="{name}"]')

    def add(self, spec: str, **params: object) -> str:
        """Add a node from the catalog through the searchable picker; fill params in its
        inspector (the drawer's fields); return the node's name."""
        self.page.click(".nodes-add")
        self.page.fill(".nodes-picker input[type=search]", spec)
        self.page.click(f'.nodes-picker [data-spec="{spec}"]')
        name = self.page.locator(".nodes-inspector .node-name").input_value()
        expect(self.node(name)).to_be_visible()
        for param, value in params.items():
            self.page.fill(f"#node-f-{param}", str(value))
        return name

    def socket(self, node: str, side: str, key: str):
        return self.node(node).locator(f'[data-{side}="{key}"] .sc-socket')

    def drag(self, source, target) -> None:
        """Press on one socket, move to the other in steps, release: as a user connects."""
        a, b = source.bounding_box(), target.bounding_box()
        mouse = self.page.mouse
        mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
        mouse.down()
        mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=8)
        mouse.up()

    def connect(self, source: str, output: str, target: str, input: str,
                param: bool = False) -> None:
        self.drag(self.socket(source, "output", output),
                  self.socket(target, "param" if param else "input", input))

    def connections(self):
        return self.page.locator(".nodes-canvas svg.sc-connection path")

    def run(self) -> dict:
        """Click Run; return the run the server accepted."""
        with self.page.expect_response(lambda r: r.url.endswith("/api/workflows")
                                       and r.request.method == "POST") as answer:
            self.page.click(".nodes-run")
        return answer.value.json() | {"status": answer.value.status}

    def deselect(self) -> None:
        self.page.locator(".nodes-inspector").get_by_role("button", name="Close").click()

    def assert_clean(self, allow: tuple[str, ...] = ()) -> None:
        errors = [e for e in self.errors if not any(a in e for a in allow)]
        assert not errors, errors


@pytest.fixture
def editor(browser, stablecore_server: ServerProcess) -> Iterator[Editor]:
    tab = Editor(browser, stablecore_server.url)
    yield tab
    tab.context.close()


def test_screenshot_of_the_node_editor(editor: Editor, stablecore_client: Client,
                                       tmp_path: Path) -> None:
    """Shipped plugins in a graph, run, with a node's settings open: the README's picture
    (first, so the queue beside it shows this graph's jobs only)."""
    out = ROOT / "docs" if os.environ.get("STABLECORE_SCREENSHOTS") else tmp_path
    panels = PIL.Image.open(ROOT / "docs" / "example-images.png")  # docs/examples.py made it
    panels.crop((0, 0, 384, 256)).save(tmp_path / "scene.png")
    panels.crop((784, 0, 1168, 256)).save(tmp_path / "autumn.png")
    scene = stablecore_client.upload(tmp_path / "scene.png")["id"]
    autumn = stablecore_client.upload(tmp_path / "autumn.png")["id"]
    graph = {"name": "autumn turn", "nodes": {
        "turn": {"spec": "transform2d.transform", "inputs": {"image": scene},
                 "params": {"rotate": 12, "scale": 1.3, "border": "reflect"}},
        "recolour": {"spec": "palette.match", "params": {"strength": 0.9},
                     "inputs": {"image": {"node": "turn", "output": "image"},
                                "reference": autumn}},
        "colours": {"spec": "palette.extract", "params": {"colors": 6},
                    "inputs": {"image": {"node": "recolour", "output": "image"}}}}}
    (tmp_path / "autumn.json").write_text(json.dumps(graph))
    page = editor.page
    page.set_input_files(".nodes-toolbar input[type=file]", tmp_path / "autumn.json")
    expect(editor.connections()).to_have_count(2)
    run = editor.run()
    assert run["status"] == 201, run
    expect(page.locator(".nodes-run-state")).to_have_text("succeeded")
    editor.node("recolour").locator(".sc-title").click()
    expect(page.locator(".nodes-inspector")).to_be_visible()
    page.click(".nodes-fit")
    for img in page.locator(".sc-preview img").all():
        expect(img).to_have_js_property("complete", True)
    page.mouse.move(0, 0)
    page.screenshot(path=out / "screenshot-nodes.png")
    assert (out / "screenshot-nodes.png").stat().st_size > 10_000
    editor.assert_clean()


def test_build_run_and_rerun_a_graph(editor: Editor, stablecore_client: Client,
                                     tmp_path: Path) -> None:
    page = editor.page
    # a chain, each node added right of the one selected: frames -> tint -> stack -> invert
    frames = editor.add("testing.frames", n=3, size=8)
    tint = editor.add("testing.tint")
    stack = editor.add("testing.stack")
    invert = editor.add("testing.invert")
    editor.deselect()
    # a text output feeding a param: echo -> count.text
    echo = editor.add("testing.echo", text="a b c", n=2)
    count = editor.add("testing.count")
    page.locator(".nodes-inspector").get_by_role("button", name="Feed text from an output").click()
    expect(editor.socket(count, "param", "text")).to_be_visible()

    editor.deselect()
    page.click(".nodes-fit")
    editor.connect(frames, "image", tint, "image")  # a list into one image: tint maps over it
    expect(editor.node(tint).locator(".sc-map")).to_be_visible()
    editor.connect(tint, "image", stack, "images")
    editor.connect(stack, "image", invert, "image")
    editor.connect(echo, "text", count, "text", param=True)
    expect(editor.connections()).to_have_count(4)
    # numbers give each item of a map its own value: ramp -> tint.amount, column v
    ramp = editor.add("testing.ramp", n=3, step=5)
    editor.node(tint).locator(".sc-title").click()
    inspector = page.locator(".nodes-inspector")
    inspector.get_by_role("button", name="Feed amount from an output").click()
    page.click(".nodes-fit")
    editor.connect(ramp, "numbers", tint, "amount", param=True)
    inspector.locator(".link-column").fill("v")
    inspector.locator(".link-column").press("Tab")
    expect(editor.connections()).to_have_count(5)

    # a wrong connection is refused: text into an image input
    editor.connect(echo, "text", invert, "image")
    expect(page.locator('.nodes-note[data-tag="refused"]')).to_contain_text("takes an image")
    expect(editor.connections()).to_have_count(5)

    run = editor.run()
    assert run["status"] == 201, run
    assert set(run["nodes"]) == {frames, tint, stack, invert, echo, count, ramp}
    for name in run["nodes"]:
        expect(editor.node(name)).to_have_attribute("data-state", "succeeded")
    expect(page.locator(".nodes-run-state")).to_have_text("succeeded")
    done = stablecore_client.workflow(run["id"])
    assert done["state"] == "succeeded"
    assert done["graph"]["nodes"][tint] == {
        "spec": "testing.tint", "params": {}, "map": "image", "cache": True,
        "inputs": {"image": {"node": frames, "output": "image", "column": None}},
        "links": {"amount": {"node": ramp, "output": "numbers", "column": "v"}}}
    pixels = fetch_image(stablecore_client, done["nodes"][invert]["outputs"]["image"], tmp_path)
    assert pixels.shape == (8, 24, 3)
    for i in range(3):  # frame i is (20 i, 0, 0), tinted by 5 i, stacked, inverted
        assert tuple(pixels[0, 8 * i]) == (255 - 25 * i, 255 - 5 * i, 255 - 5 * i)
    expect(editor.node(count).locator(".sc-preview")).to_contain_text("5")  # "a b ca b c"
    assert not page.locator(".sc-node[data-cached]").count()

    # the result opens in the viewer
    editor.node(invert).locator(".sc-preview").click()
    viewer = page.locator("dialog.viewer")
    expect(viewer.locator(".stage img")).to_have_js_property("naturalWidth", 24)
    viewer.get_by_role("button", name="Close").click()

    # the same graph again: every node reuses its result, and says so
    again = editor.run()
    assert again["id"] != run["id"]
    expect(page.locator(".nodes-run-state")).to_have_text("succeeded")
    expect(page.locator(".sc-node[data-cached]")).to_have_count(7)
    expect(editor.node(tint).locator(".sc-badge.cached")).to_be_visible()
    rerun = stablecore_client.workflow(again["id"])
    assert all(n["cached"] for n in rerun["nodes"].values() if "items" not in n)
    assert all(i["cached"] for i in rerun["nodes"][tint]["items"])

    editor.assert_clean()


def test_refused_graph_files_and_saved_workflows(editor: Editor, stablecore_client: Client,
                                                 tmp_path: Path) -> None:
    page = editor.page
    bad = {"name": "echo twice", "nodes": {"say": {"spec": "testing.echo",
                                                   "params": {"text": "hi", "n": 99}}}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    page.set_input_files(".nodes-toolbar input[type=file]", tmp_path / "bad.json")
    expect(editor.node("say")).to_be_visible()
    assert page.locator(".nodes-graph-name").input_value() == "echo twice"

    # the server's 422 names nodes.say.params.n: the node and its field show it
    run = editor.run()
    assert run["status"] == 422 and run["field"] == "nodes.say.params.n", run
    expect(editor.node("say")).to_have_class("sc-node state-idle selected  invalid")
    expect(editor.node("say").locator(".sc-error")).to_contain_text("params.n")
    expect(page.locator('.nodes-inspector [data-field="params.n"] .field-error')).to_contain_text(
        "maximum")
    page.fill("#node-f-n", "2")
    run = editor.run()
    assert run["status"] == 201
    expect(editor.node("say")).to_have_attribute("data-state", "succeeded")
    expect(editor.node("say").locator(".sc-preview")).to_contain_text("hihi")
    said = stablecore_client.workflow(run["id"])["nodes"]["say"]["outputs"]["text"]["id"]

    # save the graph as a file: the JSON of the API; load it back
    with page.expect_download() as download:
        page.click(".nodes-download")
    saved = json.loads(Path(download.value.path()).read_text())
    assert saved == {"name": "echo twice", "nodes": {"say": {"spec": "testing.echo",
                                                             "params": {"text": "hi", "n": 2}}}}
    page.click("button:text('Clear')")
    expect(page.locator(".sc-node")).to_have_count(0)
    (tmp_path / "again.json").write_text(download.value.path().read_text())
    page.set_input_files(".nodes-toolbar input[type=file]", tmp_path / "again.json")
    expect(editor.node("say")).to_be_visible()

    # save as a named workflow with one exposed param: a job of its own
    page.click(".nodes-save-job")
    dialog = page.locator("dialog.save-job-dialog")
    dialog.locator(".saved-name").fill("echo_twice")
    dialog.locator('input[data-target="say.n"]').check()
    dialog.get_by_role("button", name="Save").click()
    expect(page.locator(".nodes-note")).to_contain_text("Saved as workflow.echo_twice")
    spec = next(s for s in stablecore_client.specs() if s["name"] == "workflow.echo_twice")
    assert spec["params"]["properties"]["n"]["default"] == 2
    assert set(spec["outputs"]) == {"text"}
    job = stablecore_client.run("workflow.echo_twice", {"n": 3})
    assert job["state"] == "succeeded", job

    # and it opens again from the list of saved workflows
    page.click("button:text('Clear')")
    page.click(".nodes-saved")
    page.locator('[data-saved="echo_twice"]').get_by_role("button", name="Open").click()
    expect(editor.node("say")).to_be_visible()

    # a node's result in the gallery opens its graph, with that run on it
    page.click("button:text('Clear')")
    page.click('.view-tab[data-view="gallery"]')
    page.locator(f'.gallery .card[data-artifact="{said}"]').click()
    page.locator("dialog.viewer").get_by_role("button", name="Open its graph").click()
    expect(editor.node("say")).to_have_attribute("data-state", "succeeded")
    assert page.locator(".nodes-graph-name").input_value() == "echo twice"
    editor.assert_clean(allow=("422",))


def test_progress_previews_reload_and_cancel(editor: Editor, tmp_path: Path) -> None:
    page = editor.page
    graph = {"name": "slow", "nodes": {
        "draw": {"spec": "testing.preview", "params": {"steps": 6, "delay": 0.4, "size": 32},
                 "cache": False},
        "wait": {"spec": "testing.sleep", "params": {"seconds": 60, "steps": 600}},
        "after": {"spec": "testing.echo", "links": {"text": {"node": "wait", "output": "text"}}}}}
    (tmp_path / "slow.json").write_text(json.dumps(graph))
    page.set_input_files(".nodes-toolbar input[type=file]", tmp_path / "slow.json")
    expect(editor.connections()).to_have_count(1)  # wait.text feeds after's text param
    expect(editor.node("after").locator('[data-param="text"] .sc-socket')).to_be_visible()
    editor.run()
    # live progress and the preview of the running step, from the event stream
    page.wait_for_function(
        """() => {
             const bar = document.querySelector('.sc-node[data-node="draw"] .sc-bar');
             const v = bar && Number(bar.getAttribute("aria-valuenow"));
             return v > 0 && v < 100;
           }""")
    expect(editor.node("draw").locator(".sc-preview img")).to_be_visible()
    expect(editor.node("wait")).to_have_attribute("data-state", "running")
    # a reload keeps the graph and follows the run again
    page.reload()
    expect(editor.node("wait")).to_have_attribute("data-state", "running")
    expect(editor.node("draw")).to_have_attribute("data-state", "succeeded")
    expect(editor.node("after")).to_have_attribute("data-state", "waiting")
    page.click(".nodes-cancel")
    expect(editor.node("wait")).to_have_attribute("data-state", "cancelled")
    expect(editor.node("after")).to_have_attribute("data-state", "cancelled")
    expect(page.locator(".nodes-run-state")).to_have_text("cancelled")
    editor.assert_clean()
