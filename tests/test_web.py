"""The web UI in Debian's Chromium (Playwright), against a real server with the test plugins.

Screenshots go to a temporary folder; `STABLECORE_SCREENSHOTS=docs pytest tests/test_web.py`
writes them to docs/ instead (they are the README's pictures).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from stablecore.client import Client
from stablecore.testing import ServerProcess

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 30_000  # generous upper bound for waits on a loaded CI machine; never a timing assert

pytestmark = [
    pytest.mark.skipif(not (ROOT / "web" / "dist" / "index.html").is_file(),
                       reason="web UI not built: run `make web` (npm ci && npm run build in web/)"),
    pytest.mark.skipif(not CHROMIUM.is_file(),
                       reason="needs Debian's chromium (.ci/apt-packages.txt)"),
]




class Page:
    """A fresh browser tab on the server, recording console errors and the WebSocket URLs."""

    def __init__(self, browser, url: str) -> None:
        self.url = url
        self.context = browser.new_context(viewport={"width": 1440, "height": 900})
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.sockets: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("websocket", lambda ws: self.sockets.append(ws.url))

    def open(self) -> Page:
        self.page.goto(self.url)
        expect(self.page.locator(".linkstate")).to_have_attribute("data-state", "live")
        return self

    def pick(self, spec: str) -> None:
        """Choose a job through the searchable picker, as a user would."""
        self.page.click(".job-button")
        self.page.fill(".picker input[type=search]", spec)
        self.page.click(f'.picker [data-job="{spec}"]')
        expect(self.page.locator(".job-button")).to_have_attribute("data-current", spec)

    def submit(self) -> dict:
        """Click Queue; return the job the server accepted."""
        with self.page.expect_response(lambda r: r.url.endswith("/api/jobs")
                                       and r.request.method == "POST") as answer:
            self.page.click("button.primary[type=submit]")
        assert answer.value.status == 201, answer.value.text()
        return answer.value.json()

    def job(self, job_id: str):
        return self.page.locator(f'li.job[data-job-id="{job_id}"]')

    def assert_clean(self, allow: tuple[str, ...] = ()) -> None:
        errors = [e for e in self.errors if not any(a in e for a in allow)]
        assert not errors, errors


@pytest.fixture
def ui(browser, stablecore_server: ServerProcess) -> Iterator[Page]:
    page = Page(browser, stablecore_server.url)
    yield page
    page.context.close()


def gradient_png(path: Path, size: int = 48) -> Path:
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, size)[None, :]
    rgb[..., 2] = np.linspace(255, 0, size)[:, None]
    rgb[..., 1] = 90
    PIL.Image.fromarray(rgb).save(path)
    return path


def test_drawer_renders_every_job(ui: Page, stablecore_client: Client) -> None:
    ui.open()
    specs = stablecore_client.specs()
    assert {"testing.echo", "testing.invert", "testing.several"} <= {s["name"] for s in specs}
    for spec in specs:
        ui.pick(spec["name"])
        fields = ui.page.locator(".fields [data-field]")
        keys = {f"params.{p}" for p in spec["params"].get("properties", {})}
        keys |= {f"inputs.{i}" for i in spec["inputs"]}
        expect(fields).to_have_count(len(keys))
        assert {fields.nth(i).get_attribute("data-field") for i in range(len(keys))} == keys
    # the generated widgets follow the schema
    ui.pick("testing.sleep")
    expect(ui.page.locator('[data-field="params.seconds"] input[type=range]')).to_have_attribute(
        "max", "60")
    ui.pick("testing.crash")
    expect(ui.page.locator("#f-how option")).to_have_text(["exit", "sigkill", "segv"])
    expect(ui.page.locator("#f-how")).to_have_value("1")  # the default, "sigkill"
    ui.pick("testing.several")
    seed = ui.page.locator("#f-seed")
    expect(seed).to_have_value("-1")
    ui.page.click('[aria-label="Randomise seed"]')
    assert int(seed.input_value()) >= 0
    ui.assert_clean()


def test_submit_shows_progress_and_result(ui: Page) -> None:
    ui.open()
    ui.pick("testing.sleep")
    ui.page.fill("#f-seconds", "3")
    ui.page.fill("#f-steps", "3")
    job = ui.submit()
    bar = ui.job(job["id"]).locator(".bar")
    # progress arrives live from the event stream: a step in between, then the end
    ui.page.wait_for_function(
        """id => {
             const bar = document.querySelector(`li.job[data-job-id="${id}"] .bar`);
             const v = bar && Number(bar.getAttribute("aria-valuenow"));
             return v > 0 && v < 100;
           }""", arg=job["id"])
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(ui.job(job["id"])).to_have_attribute("data-state", "succeeded")
    # the result appears in the gallery, and the viewer shows it with its parameters
    result = ui.page.locator(".gallery .card", has_text="testing.sleep").first
    expect(result).to_contain_text("slept 3")
    result.click()
    expect(ui.page.locator("dialog.viewer .stage")).to_contain_text("slept 3")
    expect(ui.page.locator("dialog.viewer dl.params")).to_contain_text("seconds")
    ui.page.locator("dialog.viewer").get_by_role("button", name="Use these again").click()
    expect(ui.page.locator("#f-seconds")).to_have_value("3")
    ui.assert_clean()


def test_image_job_thumbnail_in_queue_and_gallery(ui: Page, stablecore_client: Client) -> None:
    ui.open()
    ui.pick("testing.preview")
    ui.page.fill("#f-steps", "4")
    job = ui.submit()
    expect(ui.job(job["id"])).to_have_attribute("data-state", "succeeded")
    image = stablecore_client.wait(job["id"])["outputs"]["image"]["id"]
    thumb = ui.job(job["id"]).locator(".thumb img")
    expect(thumb).to_have_attribute("src", f"/api/artifacts/{image}")
    expect(ui.page.locator(f'.gallery .card[data-artifact="{image}"] img')).to_have_js_property(
        "naturalWidth", 64)
    ui.assert_clean()


def test_upload_image_as_input(ui: Page, stablecore_client: Client, tmp_path: Path) -> None:
    source = gradient_png(tmp_path / "gradient.png")
    ui.open()
    ui.pick("testing.invert")
    ui.page.set_input_files('[data-field="inputs.image"] input[type=file]', source)
    expect(ui.page.locator('[data-field="inputs.image"] .dropzone img')).to_be_visible()
    job = ui.submit()
    expect(ui.job(job["id"])).to_have_attribute("data-state", "succeeded")
    done = stablecore_client.wait(job["id"])
    out = stablecore_client.download(done["outputs"]["image"]["id"], tmp_path / "out.png")
    inverted = 255 - np.asarray(PIL.Image.open(source).convert("RGB"), dtype=np.int16)
    assert np.array_equal(np.asarray(PIL.Image.open(out).convert("RGB")), inverted)
    card = ui.page.locator(f'.gallery .card[data-artifact="{done["outputs"]["image"]["id"]}"]')
    expect(card).to_be_visible()

    # a file dropped on the optional mask input is uploaded too; "from gallery" picks an output
    ui.page.evaluate(
        """async () => {
             const blob = await (await fetch(document.querySelector(".gallery img").src)).blob();
             const data = new DataTransfer();
             data.items.add(new File([blob], "dropped.png", {type: "image/png"}));
             document.querySelector('[data-field="inputs.mask"] .dropzone')
               .dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
           }""")
    expect(ui.page.locator('[data-field="inputs.mask"] .caption')).to_have_text("dropped.png")
    ui.page.click('[data-field="inputs.image"] .field-head button.link')
    ui.page.locator("dialog .pick").first.click()
    expect(ui.page.locator('[data-field="inputs.image"] .dropzone img')).to_be_visible()
    job = ui.submit()
    assert set(job["inputs"]) == {"image", "mask"}
    expect(ui.job(job["id"])).to_have_attribute("data-state", "succeeded")

    # "send to" from the viewer puts a result into the first input that takes it
    newest = stablecore_client.wait(job["id"])["outputs"]["image"]["id"]
    ui.pick("testing.echo")
    ui.page.locator(f'.gallery .card[data-artifact="{newest}"]').click()
    ui.page.locator("dialog.viewer select").select_option("testing.invert")
    expect(ui.page.locator(".job-button")).to_have_attribute("data-current", "testing.invert")
    expect(ui.page.locator('[data-field="inputs.image"] .dropzone img')).to_have_attribute(
        "data-artifact", newest)
    ui.assert_clean()


def test_a_list_input_takes_several_files_in_order(ui: Page, stablecore_client: Client,
                                                   tmp_path: Path) -> None:
    small = gradient_png(tmp_path / "small.png", size=16)
    large = gradient_png(tmp_path / "large.png", size=32)
    ui.open()
    ui.pick("testing.stack")
    field = '[data-field="inputs.images"]'
    ui.page.set_input_files(f"{field} input[type=file]", [small, large])
    expect(ui.page.locator(f"{field} .caption")).to_have_text(
        "2 \u00d7 image \u00b7 drop or click to add more")
    ui.page.set_input_files(f"{field} input[type=file]", small)  # one more, appended
    expect(ui.page.locator(f"{field} .dropzone img")).to_have_count(3)
    job = ui.submit()
    assert len(job["inputs"]["images"]) == 3
    done = stablecore_client.wait(job["id"])
    assert done["state"] == "succeeded", done["error"]
    out = stablecore_client.download(done["outputs"]["image"]["id"], tmp_path / "out.png")
    assert PIL.Image.open(out).size == (16 + 32 + 16, 32)
    ui.page.click(f"{field} button[aria-label='Remove images']")
    expect(ui.page.locator(f"{field} .dropzone img")).to_have_count(0)
    ui.assert_clean()


def test_cancel_a_running_job(ui: Page) -> None:
    ui.open()
    ui.pick("testing.sleep")
    ui.page.fill("#f-seconds", "60")
    ui.page.fill("#f-steps", "600")
    job = ui.submit()
    item = ui.job(job["id"])
    expect(item).to_have_attribute("data-state", "running")
    item.get_by_role("button", name="Cancel").click()
    expect(item).to_have_attribute("data-state", "cancelled")
    ui.assert_clean()


def test_queue_reorder_and_retry(ui: Page, stablecore_client: Client) -> None:
    ui.open()
    blocker = stablecore_client.submit("testing.sleep", {"seconds": 60, "steps": 600})
    first = stablecore_client.submit("testing.echo", {"text": "first"})
    second = stablecore_client.submit("testing.echo", {"text": "second"})
    expect(ui.job(blocker["id"])).to_have_attribute("data-state", "running")
    ids = ui.page.locator("li.job[data-state=queued]")
    expect(ids).to_have_count(2)
    assert ids.nth(0).get_attribute("data-job-id") == first["id"]
    ui.job(second["id"]).get_by_role("button", name="Raise priority").click()
    expect(ids.nth(0)).to_have_attribute("data-job-id", second["id"])
    assert stablecore_client.job(second["id"])["priority"] == 1
    ui.job(first["id"]).get_by_role("button", name="Cancel").click()
    expect(ui.job(first["id"])).to_have_attribute("data-state", "cancelled")
    ui.job(blocker["id"]).get_by_role("button", name="Cancel").click()
    expect(ui.job(second["id"])).to_have_attribute("data-state", "succeeded")
    with ui.page.expect_response(lambda r: r.url.endswith("/retry")) as answer:
        ui.job(first["id"]).get_by_role("button", name="Retry").click()
    retried = answer.value.json()
    assert retried["params"] == first["params"]
    expect(ui.job(retried["id"])).to_have_attribute("data-state", "succeeded")
    ui.assert_clean()


def test_reload_mid_job_continues(ui: Page) -> None:
    ui.open()
    ui.pick("testing.sleep")
    ui.page.fill("#f-seconds", "4")
    ui.page.fill("#f-steps", "8")
    job = ui.submit()
    expect(ui.job(job["id"])).to_have_attribute("data-state", "running")
    ui.page.reload()
    expect(ui.page.locator(".linkstate")).to_have_attribute("data-state", "live")
    assert "since=" in ui.sockets[-1]  # the stream resumed from the last event seen
    expect(ui.job(job["id"]).locator(".bar")).to_have_attribute("aria-valuenow", "100")
    expect(ui.job(job["id"])).to_have_attribute("data-state", "succeeded")
    expect(ui.page.locator(".gallery .card", has_text="testing.sleep").first).to_be_visible()
    ui.assert_clean()


def test_server_validation_error_on_the_field(ui: Page) -> None:
    ui.open()
    ui.pick("testing.echo")
    ui.page.fill("#f-n", "50")  # the schema's maximum is 10; the server says so
    with ui.page.expect_response(lambda r: r.url.endswith("/api/jobs")) as answer:
        ui.page.click("button.primary[type=submit]")
    assert answer.value.status == 422
    field = ui.page.locator('[data-field="params.n"]')
    expect(field).to_have_class(re.compile(r"\binvalid\b"))
    expect(field.locator(".field-error")).to_contain_text("greater than the maximum of 10")
    expect(ui.page.locator('[data-field="params.text"] .field-error')).to_be_empty()

    ui.pick("testing.invert")  # a required input left empty
    ui.page.click("button.primary[type=submit]")
    expect(ui.page.locator('[data-field="inputs.image"] .field-error')).to_contain_text(
        "required image input missing")
    ui.assert_clean(allow=("status of 422",))


def test_reconnects_after_the_server_restarts(browser, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    page = Page(browser, server.url)
    try:
        page.open()
        server.stop()
        expect(page.page.locator(".linkstate")).to_have_attribute("data-state", "lost")
        expect(page.page.locator(".banner")).to_contain_text("reconnecting")
        server = ServerProcess(tmp_path / "data", port=server.port).start()
        expect(page.page.locator(".linkstate")).to_have_attribute("data-state", "live")
        expect(page.page.locator(".banner")).to_contain_text("Reconnected")
        page.pick("testing.echo")
        job = page.submit()
        expect(page.job(job["id"])).to_have_attribute("data-state", "succeeded")
    finally:
        page.context.close()
        server.stop()


def test_access_token_entered_once(browser, tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", token="s3cret") as server:
        page = Page(browser, server.url)
        try:
            page.page.goto(server.url)
            # a token-protected server opens on the sign-in page; the token dialog is a click
            page.page.get_by_role("button", name="Use an access token instead").click()
            page.page.fill("dialog.token input", "s3cret")
            page.page.click("dialog.token button[type=submit]")
            expect(page.page.locator(".linkstate")).to_have_attribute("data-state", "live")
            page.pick("testing.preview")
            job = page.submit()
            expect(page.job(job["id"])).to_have_attribute("data-state", "succeeded")
            thumb = page.job(job["id"]).locator(".thumb img")
            expect(thumb).to_have_js_property("naturalWidth", 64)
            page.assert_clean(allow=("status of 401",))
        finally:
            page.context.close()


def test_drawer_opens_on_the_job_run_last(ui: Page, stablecore_client: Client) -> None:
    names = [s["name"] for s in stablecore_client.specs()]
    first = "sd.txt2img" if "sd.txt2img" in names else names[0]
    ui.open()
    current = ui.page.locator(".job-button")
    expect(current).to_have_attribute("data-current", first)  # a first visit
    ui.pick("testing.echo")
    job = ui.submit()
    expect(ui.job(job["id"])).to_have_attribute("data-state", "succeeded")
    ui.pick("testing.sleep")  # looked at, not run
    ui.open()  # a reload
    expect(current).to_have_attribute("data-current", "testing.echo")
    ui.assert_clean()


def test_failed_job_shows_its_traceback_and_log(ui: Page, stablecore_client: Client) -> None:
    ui.open()
    ui.pick("testing.chatty")  # prints to stdout and stderr, then raises
    ui.page.fill("#f-lines", "2")
    job = ui.submit()
    item = ui.job(job["id"])
    expect(item).to_have_attribute("data-state", "failed")
    expect(item.locator(".job-error")).to_have_text("RuntimeError: chatty failed on purpose")
    details = item.locator(".job-details")
    expect(details).to_be_hidden()
    toggle = item.get_by_role("button", name="details")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    traceback = details.locator("pre.traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("chatty failed on purpose")
    assert traceback.inner_text() == stablecore_client.job(job["id"])["traceback"]
    stdout, stderr = details.locator(".log-stdout"), details.locator(".log-stderr")
    expect(stdout).to_contain_text(["stdout: stdout line 0", "stdout: stdout line 1"])
    expect(stdout.filter(has_text="straight to fd 1")).to_have_count(1)
    expect(stderr).to_have_text("stderr: a warning on stderr")

    ui.open()  # after a reload, the log comes from the job's stored events
    item.get_by_role("button", name="details").click()
    expect(traceback).to_contain_text("chatty failed on purpose")
    expect(stdout).to_contain_text(["stdout: stdout line 0", "stdout: stdout line 1"])
    expect(stderr).to_have_text("stderr: a warning on stderr")
    item.get_by_role("button", name="details").click()
    expect(details).to_be_hidden()
    ui.assert_clean()


def test_json_outputs_shown_inline(ui: Page, stablecore_client: Client) -> None:
    ui.open()
    ui.pick("testing.summary")  # outputs: words (a list), stats (a dict) and an image
    ui.page.fill("#f-text", "b c a")
    job = ui.submit()
    item = ui.job(job["id"])
    expect(item).to_have_attribute("data-state", "succeeded")
    words = item.locator('.json-output[data-output="words"] pre.json-value')
    expect(words).to_have_text('[ "a", "b", "c" ]')  # short: on one line
    expect(item.locator('.json-output[data-output="stats"]')).to_contain_text('{ "n": 3 }')
    expect(item.locator(".thumb img")).to_be_visible()  # the image still makes the thumbnail
    outputs = stablecore_client.wait(job["id"])["outputs"]
    card = ui.page.locator(f'.gallery .card[data-artifact="{outputs["stats"]["id"]}"]')
    expect(card.locator("pre.json-value")).to_contain_text('"n": 3')
    card.click()
    stage = ui.page.locator("dialog.viewer .stage pre.json-value")
    expect(stage).to_have_text(json.dumps({"n": 3.0}, indent=2).replace("3.0", "3"))
    ui.page.keyboard.press("Escape")

    ui.pick("testing.count")  # a plain int
    ui.page.fill("#f-text", " ".join(["word"] * 7))
    job = ui.submit()
    expect(ui.job(job["id"]).locator("pre.json-value")).to_have_text("7")
    ui.pick("testing.summary")  # a long value is cut short in the queue
    ui.page.fill("#f-text", " ".join(f"word{i:03}" for i in range(200)))
    job = ui.submit()
    words = ui.job(job["id"]).locator('.json-output[data-output="words"] pre.json-value')
    expect(words).to_contain_text("more characters")
    assert len(words.inner_text()) < 500
    ui.assert_clean()


def test_rescan_refreshes_the_catalog(ui: Page, stablecore_server: ServerProcess) -> None:
    folder = stablecore_server.data_dir / "models" / "testing"  # testing.pick lists its files
    ui.open()
    ui.pick("testing.pick")
    options = ui.page.locator("#f-name option")
    expect(options).not_to_have_count(0)
    assert "fresh-a.safetensors" not in options.all_inner_texts()
    for name in ("fresh-a.safetensors", "fresh-b.safetensors"):
        (folder / name).write_bytes(b"weights")
    with ui.page.expect_response(lambda r: r.url.endswith("/api/specs")) as specs:
        ui.page.get_by_role("button", name="Rescan").click()
    assert specs.value.ok
    expect(ui.page.locator(".rescan-status")).to_contain_text("rescanned")
    expect(options).to_contain_text(["fresh-a.safetensors", "fresh-b.safetensors"])
    expect(ui.page.locator(".job-button")).to_have_attribute("data-current", "testing.pick")
    ui.page.locator("#f-name").select_option(label="fresh-b.safetensors")
    job = ui.submit()
    assert job["params"]["name"] == "fresh-b.safetensors"
    ui.assert_clean()


def test_screenshots_of_the_main_views(ui: Page, stablecore_client: Client,
                                       tmp_path: Path) -> None:
    """Real plugins' results in the gallery, the viewer and a running job, as pictures."""
    out = ROOT / "docs" if os.environ.get("STABLECORE_SCREENSHOTS") else tmp_path
    session = stablecore_client.create_session("screenshots")
    panels = PIL.Image.open(ROOT / "docs" / "example-images.png")  # docs/examples.py made it
    scene, autumn = tmp_path / "scene.png", tmp_path / "autumn.png"
    panels.crop((0, 0, 384, 256)).save(scene)
    panels.crop((784, 0, 1168, 256)).save(autumn)
    for spec, params, inputs in [
        ("wildcards.expand", {"template": "a {red|golden} __animal__ at __time_of_day__",
                              "n": 3, "seed": 7}, {}),
        ("palette.extract", {"colors": 6}, {"image": autumn}),
        ("palette.match", {"strength": 1.0}, {"image": scene, "reference": autumn}),
        ("transform2d.transform", {"rotate": 12, "scale": 1.3, "border": "reflect"},
         {"image": scene}),
    ]:
        job = stablecore_client.run(spec, params, inputs=inputs, session=session["id"])
        assert job["state"] == "succeeded", job["error"]
    ui.page.goto(ui.url)
    ui.page.evaluate("id => localStorage.setItem('stablecore.session', id)", session["id"])
    ui.open()
    ui.pick("sd.txt2img")
    ui.page.fill("#f-prompt", "a lighthouse at dusk, oil on canvas")
    ui.pick("testing.sleep")
    ui.page.fill("#f-seconds", "30")
    ui.page.fill("#f-steps", "100")
    job = ui.submit()
    ui.page.wait_for_function(
        """id => Number(document.querySelector(`li.job[data-job-id="${id}"] .bar`)
                        ?.getAttribute("aria-valuenow")) >= 5""", arg=job["id"])
    ui.pick("sd.txt2img")  # switching jobs keeps what was typed
    expect(ui.page.locator("#f-prompt")).to_have_value("a lighthouse at dusk, oil on canvas")
    ui.page.mouse.move(0, 0)
    expect(ui.page.locator(".gallery .card")).to_have_count(6)
    expect(ui.page.locator(".gallery img").last).to_have_js_property("complete", True)
    ui.page.screenshot(path=out / "screenshot-ui.png")
    ui.page.locator(".gallery .card[data-kind=image]", has_text="transform2d").click()
    expect(ui.page.locator("dialog.viewer .inputs img")).to_have_js_property("complete", True)
    ui.page.screenshot(path=out / "screenshot-viewer.png")
    ui.page.keyboard.press("Escape")
    ui.page.locator(".gallery .card[data-kind=numbers]").first.click()
    expect(ui.page.locator("dialog.viewer .plot")).to_be_visible()
    ui.page.screenshot(path=out / "screenshot-numbers.png")
    ui.page.keyboard.press("Escape")
    ui.job(job["id"]).get_by_role("button", name="Cancel").click()
    expect(ui.job(job["id"])).to_have_attribute("data-state", "cancelled")
    assert (out / "screenshot-ui.png").stat().st_size > 10_000
    ui.assert_clean()
