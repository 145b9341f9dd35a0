"""Several documents in one session in a real browser (issue #19): upload a contract, add an
annex to the same session, ask; the answer's chip names the annex and opens its page with the
quote highlighted. The server received both documents, each its own block, the contract first
and unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from builders import make_contract_pdf, make_pdf
from test_e2e_browser import _ask, _start_app, _upload

pytestmark = pytest.mark.e2e

ANNEX = ["Annex A. The goods are pumps, valves and their spare parts for the plant.",
         "The Buyer shall inspect every pump within five working days of its delivery."]


def test_two_uploads_in_one_session_and_a_chip_opens_the_second_documents_page(
        tmp_path: Path, artifacts_dir):
    from fakeserver import FakeServer
    from playwright.sync_api import expect, sync_playwright

    contract, annex = tmp_path / "supply-contract.pdf", tmp_path / "annex.pdf"
    contract.write_bytes(make_contract_pdf(3))
    annex.write_bytes(make_pdf(ANNEX))
    with FakeServer() as server:
        server.behaviour.answer = (
            'The annex says "The Buyer shall inspect every pump within five working days of its '
            'delivery" (annex.pdf, p. 2).')
        url, process, log = _start_app(server.base_url, tmp_path)
        try:
            with sync_playwright() as p:
                browser, page = _upload(p, url, contract, "supply-contract.pdf · pdf ·")
                page.locator("input[type=file]").nth(1).set_input_files(str(annex))
                expect(page.get_by_text(re.compile(r"Added annex\.pdf: the next question reads "
                                                   r"its [\d,]+ tokens"))).to_be_visible(
                                                       timeout=60_000)
                expect(page.get_by_text(re.compile(
                    r"1\. supply-contract\.pdf: [\d,]+ tokens · 2\. annex\.pdf"))).to_be_visible()
                _ask(page, "When does the Buyer inspect the pumps?")
                chip = page.get_by_role("button", name=re.compile(r"✓ annex\.pdf, p\. 2"))
                expect(chip).to_be_visible(timeout=60_000)
                chip.click()
                mark = page.locator("mark").first
                expect(mark).to_be_visible(timeout=30_000)
                assert "The Buyer shall inspect every pump" in mark.inner_text()
                page.screenshot(path=str(artifacts_dir / "07-two-documents.png"), full_page=True)
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=20)
            log.close()
    questions = [r for r in server.behaviour.requests if r.get("max_tokens", 0) > 1]
    user = questions[-1]["messages"][1]["content"]
    blocks = user.split("</document>\n\n")
    assert blocks[0].startswith("<document>\n<name>supply-contract.pdf</name>\n")
    assert blocks[1].startswith("<document>\n<name>annex.pdf</name>\n")
    assert ANNEX[1] in blocks[1]
