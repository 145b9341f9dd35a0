"""Team mode in a real browser (Debian chromium via Playwright), two users in two browser
contexts against one app: a wrong password is refused; each sees only their own documents in
the Library and through `?session=` links (another's session is 'not found'); an encrypted PDF
another user opened is not served without its password; a login expires."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from builders import make_pdf
from test_e2e_browser import CHROMIUM_ARGS, _start_app

from sparkdocs.auth import Users
from sparkdocs.store import Store

pytestmark = pytest.mark.e2e


def _users(cache: Path) -> None:
    store = Store(cache, size_limit_bytes=2**26)
    users = Users(store)
    users.add("alice", "alice-pass-1")
    users.add("bob", "bob-pass-22")
    store.close()


@pytest.fixture
def team_app(tmp_path: Path):
    """The app in password mode, against the fake server (no answer is needed here)."""
    from fakeserver import FakeServer

    _users(tmp_path / "cache")

    def start(**overrides: str) -> str:
        url, process, log = _start_app(server.base_url, tmp_path, SPARKDOCS_AUTH="password",
                                       **overrides)
        started.append((process, log))
        return url

    started: list = []
    with FakeServer() as server:
        yield start
        for process, log in started:
            process.terminate()
            process.wait(timeout=20)
            log.close()


def _log_in(page, user: str, password: str) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_role("textbox", name="Username")).to_be_visible(timeout=60_000)
    page.get_by_role("textbox", name="Username").fill(user)
    page.get_by_role("textbox", name="Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


def test_two_users_see_only_their_own_documents_and_sessions(team_app, tmp_path, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    url = team_app()
    note = tmp_path / "alice-secret-note.md"
    note.write_text("# Alice's note\nThe acquisition closes on 3 March.")
    locked = tmp_path / "locked.pdf"
    locked.write_bytes(make_pdf(["Clause 7. The price is forty-two million."],
                                password="pdf-pass-7"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=CHROMIUM_ARGS)
        alice = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        bob = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()

        alice.goto(url)
        _log_in(alice, "alice", "bob-pass-22")  # bob's password is not alice's
        expect(alice.get_by_text("Wrong username or password.")).to_be_visible(timeout=30_000)
        expect(alice.get_by_text("Ask your document")).to_have_count(0)
        _log_in(alice, "alice", "alice-pass-1")
        expect(alice.get_by_text("Ask your document")).to_be_visible(timeout=30_000)
        alice.locator("input[type=file]").first.set_input_files(str(note))
        expect(alice.get_by_text("alice-secret-note.md · text ·")).to_be_visible(timeout=60_000)
        match = re.search(r"session=([0-9a-f]+)", alice.url)
        assert match, alice.url
        session_id = match.group(1)
        # alice opens the encrypted PDF with its password
        alice.get_by_text("Options: PDF password").click()
        alice.get_by_role("textbox", name="PDF password").fill("pdf-pass-7")
        alice.get_by_role("textbox", name="PDF password").press("Enter")
        alice.wait_for_timeout(1000)  # the rerun that takes the password
        alice.get_by_role("button", name="Remove alice-secret-note.md").click()
        expect(alice.get_by_role("button", name="Remove alice-secret-note.md")).to_have_count(
            0, timeout=30_000)
        alice.wait_for_timeout(1000)  # the rerun that drops the note
        alice.locator("input[type=file]").first.set_input_files(str(locked))
        expect(alice.get_by_text("locked.pdf · pdf ·")).to_be_visible(timeout=60_000)
        alice.screenshot(path=str(artifacts_dir / "team-01-alice.png"), full_page=True)

        # bob follows alice's link: not found, exactly like a missing session
        bob.goto(f"{url}/?session={session_id}")
        _log_in(bob, "bob", "bob-pass-22")
        expect(bob.get_by_text(f"No session '{session_id}' in the store")).to_be_visible(
            timeout=30_000)
        expect(bob.get_by_text("alice-secret-note")).to_have_count(0)
        expect(bob.get_by_text("acquisition")).to_have_count(0)
        # the same encrypted PDF, uploaded by bob without its password, is refused
        bob.locator("input[type=file]").first.set_input_files(str(locked))
        expect(bob.get_by_text("locked.pdf is encrypted: type its password")).to_be_visible(
            timeout=60_000)
        expect(bob.get_by_text("locked.pdf · pdf ·")).to_have_count(0)
        expect(bob.get_by_text("forty-two")).to_have_count(0)
        bob.screenshot(path=str(artifacts_dir / "team-02-bob-ask.png"), full_page=True)

        bob.get_by_role("link", name="Library").click()
        expect(bob.get_by_text("No documents with sessions yet")).to_be_visible(timeout=30_000)
        expect(bob.get_by_text("alice-secret-note")).to_have_count(0)
        expect(bob.get_by_text("locked.pdf")).to_have_count(0)
        bob.screenshot(path=str(artifacts_dir / "team-03-bob-library.png"), full_page=True)

        alice.get_by_role("link", name="Library").click()
        # opened, never asked about: listed apart, under a closed expander
        alice.get_by_text(re.compile(r"read or counted but never asked about")).click(
            timeout=30_000)
        expect(alice.get_by_text(re.compile(r"alice-secret-note\.md — text"))).to_be_visible(
            timeout=30_000)
        expect(alice.get_by_text(re.compile(r"locked\.pdf — pdf"))).to_be_visible()
        browser.close()


def test_a_login_expires(team_app, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    url = team_app(SPARKDOCS_LOGIN_TTL_MIN="0.15")  # 9 seconds
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        _log_in(page, "bob", "bob-pass-22")
        expect(page.get_by_text("Ask your document")).to_be_visible(timeout=30_000)
        page.wait_for_timeout(10_000)
        page.get_by_role("link", name="Library").click()
        expect(page.get_by_text("Your login expired")).to_be_visible(timeout=30_000)
        expect(page.get_by_role("textbox", name="Username")).to_be_visible()
        expect(page.get_by_text("No stored documents yet")).to_have_count(0)
        page.screenshot(path=str(artifacts_dir / "team-04-expired.png"), full_page=True)
        browser.close()


def test_a_login_survives_a_reload_until_logout_and_cannot_be_forged(team_app, tmp_path,
                                                                     artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    url = team_app()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(url)
        _log_in(page, "alice", "alice-pass-1")
        expect(page.get_by_text("Ask your document")).to_be_visible(timeout=30_000)
        page.wait_for_timeout(1500)  # the run that hands the browser its cookie
        (cookie,) = [c for c in context.cookies() if c["name"] == "sparkdocs_login"]
        assert cookie["value"].startswith("alice:") and cookie["sameSite"] == "Strict"

        page.reload()  # the same tab, a new Streamlit session: still alice
        expect(page.get_by_text("Ask your document")).to_be_visible(timeout=30_000)
        expect(page.get_by_role("textbox", name="Username")).to_have_count(0)
        fresh = context.new_page()  # a new tab of the same browser: alice too
        fresh.goto(url)
        expect(fresh.get_by_text("Ask your document")).to_be_visible(timeout=30_000)
        fresh.close()

        # a cookie naming bob with alice's signature, or a longer expiry, is not a login
        user, expires, mac = cookie["value"].split(":")
        for forged in (f"bob:{expires}:{mac}", f"alice:{int(expires) + 10**6}:{mac}"):
            other = browser.new_context(viewport={"width": 1400, "height": 1000})
            other.add_cookies([{**cookie, "value": forged}])
            intruder = other.new_page()
            intruder.goto(url)
            expect(intruder.get_by_role("textbox", name="Username")).to_be_visible(timeout=60_000)
            expect(intruder.get_by_text("Ask your document")).to_have_count(0)
            other.close()

        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("textbox", name="Username")).to_be_visible(timeout=30_000)
        page.wait_for_timeout(1500)
        assert not [c for c in context.cookies() if c["name"] == "sparkdocs_login"]
        page.reload()
        expect(page.get_by_role("textbox", name="Username")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Ask your document")).to_have_count(0)
        # a copy of the cookie kept from before the logout (another browser) is over too
        kept = browser.new_context(viewport={"width": 1400, "height": 1000})
        kept.add_cookies([cookie])
        replay = kept.new_page()
        replay.goto(url)
        expect(replay.get_by_role("textbox", name="Username")).to_be_visible(timeout=60_000)
        expect(replay.get_by_text("Ask your document")).to_have_count(0)
        kept.close()

        # logged in again; then the user is removed: the kept cookie no longer logs in
        _log_in(page, "alice", "alice-pass-1")
        expect(page.get_by_text("Ask your document")).to_be_visible(timeout=30_000)
        page.wait_for_timeout(1500)
        store = Store(tmp_path / "cache", size_limit_bytes=2**26)
        Users(store).remove("alice")
        store.close()
        page.reload()
        expect(page.get_by_role("textbox", name="Username")).to_be_visible(timeout=60_000)
        page.screenshot(path=str(artifacts_dir / "team-04-removed-user.png"), full_page=True)
        browser.close()


@pytest.mark.parametrize("path", ["library", "server", "ask"])
def test_a_first_visit_by_deep_link_meets_the_login_first(team_app, path):
    """Streamlit runs a pages/ file by itself for a fresh process's first deep link; the login
    gate must still come first (each page routes through the app)."""
    from playwright.sync_api import expect, sync_playwright

    url = team_app()  # a fresh app process: nobody has opened "/" yet
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/{path}")
        expect(page.get_by_role("textbox", name="Username")).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1000)
        for title in ("Library", "Model service", "Ask your document"):
            expect(page.get_by_role("heading", name=title)).to_have_count(0)
        browser.close()


# Records, on every change of the page from its first paint, whether the page menu or the login
# form is in the DOM, so the test sees what the browser showed before the login form.
_WATCH_FIRST_PAINT = r"""
window.__shown = [];
new MutationObserver(() => {
  const nav = document.querySelector('[data-testid="stSidebarNav"], [data-testid="stNavigation"], '
    + '[data-testid="stSidebarNavItems"], [data-testid="stTopNavLinkContainer"]');
  const login = document.querySelector('input[aria-label="Username"]');
  const state = (nav ? 'menu:' + nav.innerText.replace(/\s+/g, ' ') : '') + (login ? 'login' : '');
  if (window.__shown[window.__shown.length - 1] !== state) window.__shown.push(state);
}).observe(document, {childList: true, subtree: true});
"""


@pytest.mark.parametrize("path", ["", "library"])
def test_the_first_paint_is_the_login_form_with_no_page_menu(team_app, path, artifacts_dir):
    """Issue #22: before the login, no page menu, not even for a moment, and the login form
    is the first thing in the main area."""
    from playwright.sync_api import expect, sync_playwright

    url = team_app()  # a fresh app process
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(_WATCH_FIRST_PAINT)
        page.goto(f"{url}/{path}")
        expect(page.get_by_role("textbox", name="Username")).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(artifacts_dir / f"team-05-first-paint-{path or 'root'}.png"))
        shown = page.evaluate("window.__shown")
        assert not [state for state in shown if "menu" in state], shown
        assert page.locator('[data-testid="stSidebar"]').count() == 0 or not page.locator(
            '[data-testid="stSidebar"] a').count(), "a page link before the login"
        browser.close()
