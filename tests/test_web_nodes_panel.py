"""The Nodes panel of the web UI in Debian's Chromium (Playwright), against a real server with
users and a real OpenSSH server on 127.0.0.1 (tests/sshd.py) standing in for the machine:
an admin adds the node through the panel's dialog (its unknown host key offered for trust,
then the install log streaming in), sees it up with its worker, the job that worker runs and
the bytes that came back, and removes it with its folder; a user is told nodes are for admins.

The node gets only the `testing` plugin, sees this environment's packages and installs
offline, as in tests/test_nodes.py. `STABLECORE_SCREENSHOTS=docs` writes
docs/screenshot-nodes-panel.png and docs/screenshot-nodes-add.png.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stablecore.client import Client
from stablecore.store import Store
from stablecore.testing import ServerProcess
from stablecore.users import Users

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 30_000  # an upper bound for waits on a loaded machine, never a timing assert
INSTALL_MS = 120_000  # nodes add: wheels built here, sent over SFTP, uv --offline there

_spec = importlib.util.spec_from_file_location("sshd_helper", Path(__file__).with_name("sshd.py"))
sshd_helper = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(sshd_helper)  # type: ignore[union-attr]
Sshd = sshd_helper.Sshd

pytestmark = [
    pytest.mark.skipif(not (ROOT / "web" / "dist" / "index.html").is_file(),
                       reason="web UI not built: run `make web` (npm ci && npm run build in web/)"),
    pytest.mark.skipif(not CHROMIUM.is_file(),
                       reason="needs Debian's chromium (.ci/apt-packages.txt)"),
    pytest.mark.skipif(not Path(sshd_helper.SSHD).is_file(),
                       reason="needs OpenSSH's sshd (Debian: openssh-server)"),
]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("webnodes") / "data"
    store = Store(data)
    users = Users(store)
    users.add("root", "root-password")
    users.add("alice", "alice-password", "user")
    store.close()
    with ServerProcess(data, uv_args="--offline", cancel_grace_s=1) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    token = httpx.post(server.url + "/api/tokens", auth=("root", "root-password"),
                       json={"name": "test"}).json()["token"]
    with server.client(token=token) as c:
        yield c




@pytest.fixture
def signed_in(browser, server: ServerProcess):  # type: ignore[no-untyped-def]
    """A function that opens a fresh tab signed in as a user; console errors are recorded."""
    contexts = []

    def open_as(name: str, password: str):  # type: ignore[no-untyped-def]
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
        page.on("pageerror", lambda e: page.errors.append(f"uncaught: {e}"))
        page.goto(server.url)
        page.get_by_label("User name").fill(name)
        page.get_by_label("Password").fill(password)
        page.errors.clear()  # the sign-in page's 401
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(".linkstate")).to_have_attribute("data-state", "live")
        return page

    yield open_as
    for context in contexts:
        context.close()


def test_a_user_is_told_that_nodes_are_for_admins(signed_in) -> None:
    page = signed_in("alice", "alice-password")
    panel = page.get_by_role("region", name="Nodes")
    expect(panel.locator(".nodes-forbidden")).to_have_text(
        "Only an admin can see and manage nodes (alice is a user).")
    expect(panel.get_by_role("button", name="+ Add node")).to_be_hidden()
    assert all("status of 403" in e for e in page.errors), page.errors  # the refused GET


def test_add_a_node_follow_it_and_remove_it(signed_in, server: ServerProcess, client: Client,
                                            sshd: Sshd, tmp_path: Path) -> None:
    out = ROOT / "docs" if os.environ.get("STABLECORE_SCREENSHOTS") else tmp_path
    started = time.monotonic()
    hang = client.submit("testing.hang", {"seconds": 600})  # the local worker stays busy
    page = signed_in("root", "root-password")
    panel = page.get_by_role("region", name="Nodes")
    expect(panel.locator(".nodes-list")).to_contain_text("No nodes.")

    # the dialog: the address and key; the rest under "More"
    panel.get_by_role("button", name="+ Add node").click()
    dialog = page.locator("dialog.node-add")
    dialog.locator("input[name=url]").fill(sshd.url)
    dialog.locator("input[name=key]").fill(str(sshd.client_key))
    dialog.locator("input[name=gpus]").fill("")  # CPU workers only
    dialog.locator("summary", has_text="More").click()
    remote = tmp_path / "remote" / "stablecore"
    dialog.locator("input[name=name]").fill("n1")
    dialog.locator("input[name=plugins]").fill("testing")
    dialog.locator("input[name=python]").fill(sys.executable)
    dialog.locator("input[name=remote_dir]").fill(str(remote))
    dialog.locator("input[name=system_site_packages]").check()
    dialog.locator("select[name=models]").select_option("skip")
    dialog.get_by_role("button", name="Add node").click()

    # a machine seen the first time: refused on the host-key field, its fingerprint offered
    expect(dialog.locator('.node-field[data-field="host_key"] .field-error')).to_contain_text(
        "is not a known host")
    expect(dialog.locator(".host-key-check .fingerprint")).to_have_text(sshd.fingerprint)
    dialog.get_by_role("button", name="Trust this key and add").click()

    # accepted: the install log streams in until the node is up
    log = dialog.get_by_label("Install log")
    expect(log).to_contain_text("building a wheel of", timeout=INSTALL_MS)
    state = dialog.locator(".node-install-state")
    expect(state).to_have_attribute("data-state", "up", timeout=INSTALL_MS)
    expect(state).to_have_text("n1 is up: workers n1/w0")
    expect(log).to_contain_text("installed stable-core and testing into")
    page.screenshot(path=out / "screenshot-nodes-add.png")
    dialog.get_by_role("button", name="Done").click()
    added = time.monotonic() - started

    # the panel: up, no GPU, its worker idle
    node = panel.locator('.node[data-node="n1"]')
    expect(node).to_have_attribute("data-state", "up")
    expect(node.locator(".node-state")).to_have_text("up")
    expect(node.locator(".node-gpus")).to_have_text("no GPU · 1 CPU worker")
    worker = node.locator('.node-worker[data-worker="n1/w0"]')
    expect(worker.locator(".worker-state")).to_have_text("idle")

    # a job there: its images come back (bytes received), and a running one shows on its worker
    done = client.wait(client.submit("testing.preview", {"steps": 2, "size": 32})["id"])
    assert done["state"] == "succeeded" and done["worker"] == "n1/w0", done
    received = client.get("/api/nodes/n1")["bytes_received"]
    assert received > 0
    expect(node.locator(".received")).not_to_have_text("↓ 0 B")
    expect(node.locator(".node-stats")).to_contain_text("1 done")
    sleeper = client.submit("testing.sleep", {"seconds": 30, "steps": 100})
    expect(worker.locator(".worker-jobs")).to_have_text("running testing.sleep")
    expect(worker.locator(".worker-state")).to_have_text("busy")
    page.mouse.move(0, 0)
    page.screenshot(path=out / "screenshot-nodes-panel.png")
    client.cancel(sleeper["id"])
    client.cancel(hang["id"])
    expect(worker.locator(".worker-jobs")).to_have_count(0)

    # its log, from the API and then live
    node.get_by_role("button", name="Logs").click()
    expect(page.get_by_label("Log of n1")).to_contain_text("installed stable-core and testing")
    page.keyboard.press("Escape")

    # remove it with its folder there
    node.get_by_role("button", name="Remove").click()
    confirm = page.locator("dialog.node-remove-dialog")
    confirm.get_by_label(f"also uninstall: delete {remote} there").check()
    with page.expect_response(lambda r: "/api/nodes/n1" in r.url
                              and r.request.method == "DELETE") as answer:
        confirm.get_by_role("button", name="Remove n1").click()
    assert answer.value.ok and "uninstall=true" in answer.value.url
    expect(panel.locator(".node")).to_have_count(0)
    expect(panel.locator(".nodes-list")).to_contain_text("No nodes.")
    assert client.get("/api/nodes") == []
    assert not remote.exists()
    assert all("status of 422" in e for e in page.errors), page.errors  # the host key's
    print(f"node added through the panel in {added:.1f} s; {received} bytes came back")
