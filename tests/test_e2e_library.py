"""Issue #22's Library items in a real browser (Debian chromium via Playwright) against the fake
server: `sparkdocs count` adds nothing to the Library; sessions and documents can be searched;
the list of documents never asked about can be cleared, after a confirmation. Judges: the
store's SQLite file and the browser's DOM (after a reload)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_e2e_browser import STATS, _ask, _upload
from test_e2e_pages import _db, app  # noqa: F401  (the app fixture)

pytestmark = pytest.mark.e2e


def _listed(tmp_path) -> dict[str, int]:
    with _db(tmp_path) as db:
        return dict(db.execute("SELECT name, listed FROM document_owners").fetchall())


def test_count_adds_nothing_search_narrows_and_the_unasked_list_clears(app, tmp_path,  # noqa: F811
                                                                      artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    url, server = app
    files = {"alpha-manual.md": "# Alpha\nInstall alpha with make install.",
             "beta-notes.md": "# Beta\nBeta is the second release.",
             "gamma.md": "# Gamma\nUploaded, never asked about.",
             "counted.md": "# Counted\nOnly counted on the command line."}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"),
           "SPARKDOCS_BASE_URL": server.base_url}
    subprocess.run([sys.executable, "-m", "sparkdocs", "count", str(tmp_path / "counted.md")],
                   env=env, check=True, capture_output=True, timeout=120)
    assert _listed(tmp_path) == {"counted.md": 0}  # cached, not listed
    with sync_playwright() as p:
        browser, page = _upload(p, url, tmp_path / "alpha-manual.md", "alpha-manual.md · text ·")
        _ask(page, "How do I install it?")
        expect(page.get_by_text(STATS)).to_have_count(1, timeout=60_000)
        for name, question in (("beta-notes.md", "What is beta?"), ("gamma.md", None)):
            other = browser.new_page(viewport={"width": 1400, "height": 1000})
            other.goto(url)
            other.locator("input[type=file]").first.set_input_files(str(tmp_path / name))
            expect(other.get_by_text(f"{name} · text ·")).to_be_visible(timeout=60_000)
            if question:
                _ask(other, question)
                expect(other.get_by_text(STATS)).to_have_count(1, timeout=60_000)
            other.close()

        page.goto(f"{url}/library")
        entries = page.locator('[data-testid="stExpander"] summary')
        apart = entries.filter(has_text="never asked about")
        expect(apart).to_have_count(1, timeout=60_000)
        assert apart.inner_text().split("\n")[-1].strip().startswith("1 document(s)")

        search = page.get_by_placeholder("Search documents and sessions by name or first "
                                         "question")
        for query, shown in (("install", ["alpha-manual.md"]), ("BETA", ["beta-notes.md"]),
                             ("gamma", [])):
            search.fill(query)
            search.press("Enter")
            expect(entries.filter(has_text="alpha-manual.md")).to_have_count(
                int("alpha-manual.md" in shown), timeout=30_000)
            expect(entries.filter(has_text="beta-notes.md")).to_have_count(
                int("beta-notes.md" in shown), timeout=30_000)
        expect(apart).to_have_count(1)  # gamma, by its name
        search.fill("nothing like this")
        search.press("Enter")
        expect(page.get_by_text("Nothing in the Library matches")).to_be_visible(timeout=30_000)
        search.fill("")
        search.press("Enter")

        expect(apart).to_have_count(1, timeout=30_000)
        apart.click()
        page.get_by_role("button", name="Clear this list").click()
        expect(page.get_by_text("opening one again lists it again")).to_be_visible(timeout=30_000)
        assert _listed(tmp_path)["gamma.md"] == 1  # asked, nothing cleared yet
        page.screenshot(path=str(artifacts_dir / "library-clear-asks.png"), full_page=True)
        page.get_by_role("button", name="Yes, clear").click()
        expect(apart).to_have_count(0, timeout=30_000)
        page.reload()
        expect(entries.filter(has_text="alpha-manual.md")).to_have_count(1, timeout=60_000)
        expect(entries.filter(has_text="never asked about")).to_have_count(0)
        browser.close()
    listed = _listed(tmp_path)
    assert listed["gamma.md"] == 0 and listed["alpha-manual.md"] == 1, listed
