"""Issue #14's Library and Ask-page items in a real browser (Debian chromium via Playwright)
against the fake server (the answers do not matter here). Judges: the store's SQLite file on
disk, and the browser's DOM (after a reload where it says so)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from builders import make_pdf, make_zip
from test_e2e_browser import CHROMIUM_ARGS, STATS, _ask, _start_app, _upload

pytestmark = pytest.mark.e2e
TREE = {"src/app.py": b"def main():\n    return 42\n", "src/util.py": b"X = 1\n",
        "docs/guide.md": b"# Guide\nRun main() to get the answer.\n"}


@pytest.fixture
def app(tmp_path):
    from fakeserver import FakeServer

    with FakeServer() as server:
        url, process, log = _start_app(server.base_url, tmp_path)
        yield url, server
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _db(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "cache" / "sparkdocs.sqlite3")


def _sessions_with_questions(tmp_path: Path) -> int:
    with _db(tmp_path) as db:
        return db.execute("SELECT count(DISTINCT session_id) FROM turns").fetchone()[0]


def test_library_one_entry_per_document_no_counted_or_empty_and_delete_asks_first(
        app, tmp_path, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    url, server = app
    tree = tmp_path / "tree.zip"
    tree.write_bytes(make_zip(TREE))
    counted = tmp_path / "counted-by-cli.md"
    counted.write_text("# Counted\nOnly counted on the command line.")
    note = tmp_path / "never-asked.md"
    note.write_text("# Note\nUploaded, never asked about.")
    env = {**os.environ, "SPARKDOCS_CACHE_DIR": str(tmp_path / "cache"),
           "SPARKDOCS_BASE_URL": server.base_url}
    subprocess.run([sys.executable, "-m", "sparkdocs", "count", str(counted)], env=env,
                   check=True, capture_output=True, timeout=120)
    with sync_playwright() as p:
        browser, page = _upload(p, url, tree, "tree.zip · codebase ·")
        _ask(page, "What does main return?")
        expect(page.get_by_text(STATS)).to_have_count(1, timeout=60_000)
        # the same file opened another way: docs/ excluded gives other text, another document
        page.get_by_text("Options: PDF password, codebase include/exclude").click()
        exclude = page.get_by_label("Exclude (gitignore patterns, comma-separated)")
        exclude.fill("docs/")
        exclude.press("Enter")
        expect(page.get_by_text(STATS)).to_have_count(0, timeout=60_000)  # its own session
        _ask(page, "And without the docs?")
        expect(page.get_by_text(STATS)).to_have_count(1, timeout=60_000)
        other = browser.new_page(viewport={"width": 1400, "height": 1000})  # another tab
        other.goto(url)
        other.locator("input[type=file]").first.set_input_files(str(note))
        expect(other.get_by_text("never-asked.md · text ·")).to_be_visible(timeout=60_000)
        other.reload()  # and again: still no trail of empty sessions
        other.locator("input[type=file]").first.set_input_files(str(note))
        expect(other.get_by_text("never-asked.md · text ·")).to_be_visible(timeout=60_000)
        assert _sessions_with_questions(tmp_path) == 2
        with _db(tmp_path) as db:
            empty = db.execute("SELECT count(*) FROM sessions WHERE id NOT IN "
                               "(SELECT session_id FROM turns)").fetchone()[0]
        assert empty <= 2, empty  # at most the one each document's tab is working on

        page.goto(f"{url}/library")
        entries = page.locator('[data-testid="stExpander"] summary')
        expect(entries.filter(has_text="never asked about")).to_have_count(1, timeout=60_000)
        labels = [t.split("\n")[-1].strip() for t in entries.all_inner_texts()]  # no icon
        tree_entries = [label for label in labels if label.startswith("tree.zip")]
        assert len(tree_entries) == 1 and "2 session(s)" in tree_entries[0], labels
        assert not any(label.startswith(("counted-by-cli.md", "never-asked.md"))
                       for label in labels), labels
        assert "no questions yet" not in page.locator('[data-testid="stMain"]').inner_text()
        apart = next(label for label in labels if "never asked about" in label)
        assert apart.startswith("1 document(s)"), labels  # the unasked one: count lists none
        page.screenshot(path=str(artifacts_dir / "09-library.png"), full_page=True)

        entries.filter(has_text="tree.zip").click()
        page.get_by_role("button", name="Delete", exact=True).first.click()
        expect(page.get_by_text("This cannot be undone.")).to_be_visible(timeout=30_000)
        assert _sessions_with_questions(tmp_path) == 2  # asked, nothing deleted yet
        page.screenshot(path=str(artifacts_dir / "10-library-delete-asks.png"), full_page=True)
        page.get_by_role("button", name="Yes, delete").click()
        expect(page.get_by_text("This cannot be undone.")).to_have_count(0, timeout=30_000)
        assert _sessions_with_questions(tmp_path) == 1
        page.reload()
        entries = page.locator('[data-testid="stExpander"] summary')
        expect(entries.filter(has_text="tree.zip")).to_contain_text("1 session(s)",
                                                                    timeout=60_000)
        browser.close()


def test_an_encrypted_pdf_says_in_the_main_area_to_type_the_password_then_opens(
        app, tmp_path, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    url, _ = app
    pdf = tmp_path / "locked.pdf"
    pdf.write_bytes(make_pdf(["The fee is 12 euros."], password="s3cret"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(pdf))
        main = page.locator('[data-testid="stMain"]')
        expect(main.get_by_text("locked.pdf is encrypted")).to_be_visible(timeout=60_000)
        assert "--password" not in page.locator("body").inner_text()
        expect(page.get_by_text(re.compile("Extracting"))).to_have_count(0)
        page.screenshot(path=str(artifacts_dir / "11-encrypted-pdf.png"), full_page=True)
        page.get_by_text("Options: PDF password, codebase include/exclude").click()
        field = page.get_by_label("PDF password")
        field.fill("s3cret")
        field.press("Enter")
        expect(page.get_by_text("locked.pdf · pdf ·")).to_be_visible(timeout=60_000)
        expect(main.get_by_text("locked.pdf is encrypted")).to_have_count(0)
        browser.close()


def test_skipped_files_are_a_count_and_a_list_and_follow_up_sits_by_the_input_across_reloads(
        app, tmp_path, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    url, _ = app
    files = {f"assets/img{i:02}.png": b"\x89PNG\r\n\x1a\n" + bytes(64) for i in range(81)}
    archive = tmp_path / "with-images.zip"
    archive.write_bytes(make_zip({**TREE, **files}))
    with sync_playwright() as p:
        browser, page = _upload(p, url, archive, "with-images.zip · codebase ·")
        expect(page.get_by_text(re.compile(r"^81 files skipped"))).to_be_visible()
        assert "img05.png" not in page.locator('[data-testid="stAlert"]').all_inner_texts()[0]
        page.get_by_text("Skipped: 81 file(s), each with its reason").click()
        expect(page.get_by_text("assets/img05.png: binary")).to_be_visible()
        expect(page.get_by_text("assets/img80.png: binary")).to_be_visible()  # all, not 20
        bottom = page.locator('[data-testid="stBottom"]')
        switch = bottom.locator('[data-testid="stCheckbox"]').filter(has_text="Follow-up").locator("input")
        expect(switch).to_have_count(1)
        _ask(page, "What does main return?")
        expect(page.get_by_text(STATS)).to_have_count(1, timeout=60_000)
        bottom.get_by_text(re.compile("^Follow-up")).click()
        expect(switch).to_be_checked()
        page.screenshot(path=str(artifacts_dir / "12-skipped-and-follow-up.png"), full_page=True)
        page.reload()
        expect(page.get_by_text(STATS)).to_have_count(1, timeout=60_000)
        expect(page.locator('[data-testid="stBottom"] [data-testid="stCheckbox"]')
               .filter(has_text="Follow-up").locator("input")).to_be_checked(timeout=30_000)
        browser.close()


def test_a_skipped_file_name_with_backticks_shows_as_written_not_as_a_link(app, tmp_path,
                                                                          artifacts_dir):
    """An archive's file names are anyone's text: one holding backticks broke out of the
    list's code span into a live link. The browser's DOM is the judge: no link to the name's
    URL, and the name's characters shown as they are."""
    from playwright.sync_api import expect, sync_playwright

    url, _ = app
    hostile = "assets/x`[log in again](https:evil.example)`.png"  # the path keeps no //
    archive = tmp_path / "hostile-names.zip"
    archive.write_bytes(make_zip({**TREE, hostile: b"\x89PNG\r\n\x1a\n" + bytes(64)}))
    with sync_playwright() as p:
        browser, page = _upload(p, url, archive, "hostile-names.zip · codebase ·")
        page.get_by_text("Skipped: 1 file(s), each with its reason").click()
        expect(page.get_by_text(hostile + ": binary")).to_be_visible(timeout=30_000)
        assert page.locator('[data-testid="stMain"] a[href*="evil.example"]').count() == 0
        page.screenshot(path=str(artifacts_dir / "13-hostile-skipped-name.png"), full_page=True)
        browser.close()

def test_a_first_visit_by_deep_link_still_goes_through_app_py(app):
    """With a `pages/` folder, Streamlit ran pages/server.py by itself for the first visit of
    a fresh process if it was a deep link: no app.py, so no wide layout, no navigation titles
    and no team-mode login gate. The sidebar's navigation is the judge."""
    from playwright.sync_api import expect, sync_playwright

    url, _ = app  # a fresh app process: nobody has opened "/" yet
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{url}/server")
        expect(page.get_by_text("Model service")).to_be_visible(timeout=60_000)
        nav = page.locator('header')  # the app's navigation is in the top bar
        expect(nav.get_by_text("Server", exact=True)).to_be_visible()
        assert "app" not in nav.inner_text().split(), nav.inner_text()
        assert page.locator('[data-testid="stSidebarNav"]').count() == 0
        browser.close()


def test_server_page_values_are_not_cut_off_at_1440_px(app, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    url, _ = app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{url}/server")
        values = page.locator('[data-testid="stMetricValue"]')
        expect(values.first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("nvidia/Llama-3.3-70B-Instruct-FP8")).to_be_visible()
        page.screenshot(path=str(artifacts_dir / "13-server-1440.png"), full_page=True)
        cut = values.evaluate_all(  # the value or any box inside it (the ellipsis sits inside)
            "els => els.filter(e => [e, ...e.querySelectorAll('*')]"
            ".some(x => x.scrollWidth > x.clientWidth)).map(e => e.innerText)")
        assert cut == []
        browser.close()
