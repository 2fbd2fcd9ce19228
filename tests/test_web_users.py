"""Signing in to the web UI in Debian's Chromium (Playwright) against a real server with
users: the sign-in page, the HttpOnly SameSite session cookie, CSRF on every change, another
site's page that tries to use the cookie, the user's name and role in the header, sign-out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stablecore.store import Store
from stablecore.testing import ServerProcess
from stablecore.users import Users

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 30_000  # an upper bound for waits on a loaded machine, never a timing assert

pytestmark = [
    pytest.mark.skipif(not (ROOT / "web" / "dist" / "index.html").is_file(),
                       reason="web UI not built: run `make web` (npm ci && npm run build in web/)"),
    pytest.mark.skipif(not CHROMIUM.is_file(),
                       reason="needs Debian's chromium (.ci/apt-packages.txt)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("webusers") / "data"
    store = Store(data)  # the users a `stable-core users add` would make, in its database
    users = Users(store)
    users.add("root", "root-password")
    users.add("alice", "alice-password", "user")
    users.add("vera", "vera-password", "viewer")
    store.close()
    with ServerProcess(data) as s:
        yield s




@pytest.fixture
def page(browser, server: ServerProcess) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.errors = errors
    yield page
    context.close()


def sign_in(page, url: str, name: str, password: str) -> None:
    page.goto(url)
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def admin_sessions(server: ServerProcess) -> set[str]:
    token = httpx.post(server.url + "/api/tokens", auth=("root", "root-password")).json()["token"]
    r = httpx.get(server.url + "/api/sessions", headers={"Authorization": f"Bearer {token}"})
    return {s["name"] for s in r.json()}


def test_sign_in_work_and_sign_out(page, server: ServerProcess) -> None:
    page.goto(server.url)
    form = page.get_by_role("form", name="Sign in")
    expect(form).to_be_visible()
    # a wrong password: the page says so and stays
    sign_in(page, server.url, "alice", "not-her-password")
    expect(page.get_by_role("alert")).to_have_text("wrong user name or password")
    # the right one: the app, with her name and role in the header
    page.get_by_label("Password").fill("alice-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".linkstate")).to_have_attribute("data-state", "live")
    expect(page.locator(".user-badge .user-name")).to_have_text("alice")
    expect(page.locator(".user-badge .user-role")).to_have_text("user")
    # the session is a cookie the page's scripts cannot read
    cookie = next(c for c in page.context.cookies() if c["name"] == "stablecore_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "stablecore_session" not in page.evaluate("document.cookie")
    # a change made through the UI carries the CSRF token: a new session
    page.get_by_role("button", name="New session").click()
    page.get_by_label("Session name").fill("alice-web")
    with page.expect_response(lambda r: r.url.endswith("/api/sessions")
                              and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Create").click()
    assert answer.value.status == 201, answer.value.text()
    assert "alice-web" in admin_sessions(server)
    # the same request without the CSRF token, made by a script on the page: refused
    status = page.evaluate("""async () => (await fetch('/api/sessions', {method: 'POST',
        headers: {'content-type': 'application/json'}, body: '{"name": "no-csrf"}'})).status""")
    assert status == 403
    # signing out ends the session: the sign-in page, also after a reload
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("form", name="Sign in")).to_be_visible()
    page.reload()
    expect(page.get_by_role("form", name="Sign in")).to_be_visible()
    assert "no-csrf" not in admin_sessions(server)
    assert not page.errors, page.errors


def test_another_sites_page_cannot_use_the_session(page, server: ServerProcess) -> None:
    sign_in(page, server.url, "alice", "alice-password")
    expect(page.locator(".user-badge .user-name")).to_have_text("alice")
    # `localhost` is another site than `127.0.0.1`: its page posts to the server with the
    # browser's cookies, as a cross-site request forgery would
    other = page.context.new_page()
    other.goto(server.url.replace("127.0.0.1", "localhost") + "/api/health")
    other.evaluate(f"""async () => {{
        await fetch('{server.url}/api/sessions', {{method: 'POST', mode: 'no-cors',
            credentials: 'include', headers: {{'content-type': 'text/plain'}},
            body: '{{"name": "forged"}}'}});
        const form = document.createElement('form');
        form.method = 'POST'; form.action = '{server.url}/api/jobs';
        document.body.append(form); form.submit();
    }}""")
    other.wait_for_load_state()
    assert "forged" not in admin_sessions(server)


def test_a_viewer_sees_their_role(page, server: ServerProcess) -> None:
    sign_in(page, server.url, "vera", "vera-password")
    expect(page.locator(".user-badge .user-role")).to_have_text("viewer")
    expect(page.locator(".linkstate")).to_have_attribute("data-state", "live")
    status = page.evaluate("""async () => {
        const me = await (await fetch('/api/me')).json();
        return (await fetch('/api/sessions', {method: 'POST', body: '{}',
            headers: {'content-type': 'application/json', 'X-CSRF-Token': me.csrf}})).status;
    }""")
    assert status == 403  # a viewer reads; she makes nothing


def test_the_token_dialog_stays_for_api_users(page, server: ServerProcess) -> None:
    token = httpx.post(server.url + "/api/tokens", auth=("alice", "alice-password"),
                       json={"name": "browser"}).json()["token"]
    page.goto(server.url)
    page.get_by_role("button", name="Use an access token instead").click()
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".linkstate")).to_have_attribute("data-state", "live")
    expect(page.locator(".user-badge .user-name")).to_have_text("alice")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
