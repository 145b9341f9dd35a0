"""Drawn cited pages are kept beside the PDF in the document cache (issue #22): a reopened
session with many sources does not draw them all again. Judges: the store's cache on disk (the
page comes back with the PDF itself gone) and PDFium's own output (PNG bytes)."""

from __future__ import annotations

import pytest
from builders import make_pdf

from sparkdocs import cited_page
from sparkdocs.citations import Locator
from sparkdocs.config import build_settings
from sparkdocs.documents import SectionKind
from sparkdocs.ingest import Upload
from sparkdocs.store.bodies import SOURCE_SUFFIX
from sparkdocs.workspace import Workspace

pytestmark = pytest.mark.integration


def test_a_drawn_page_is_kept_and_a_text_document_has_none(tmp_path):
    workspace = Workspace(build_settings(overrides={"cache_dir": str(tmp_path / "cache")}))
    upload = Upload("manual.pdf", make_pdf(["One.", "See www.freedesktop.org and the manual."]))
    document = workspace.load_uploads([upload], workspace.ingest_options(include=[], exclude=[],
                                                                          password=None))
    store, owner = workspace.store, workspace.settings.user
    page_two = Locator(SectionKind.PAGE, "2", "p. 2", sections=(1,))
    drawn = cited_page.cited_page_png(store, document, page_two, "the manual", owner=owner)
    assert drawn is not None and drawn.startswith(b"\x89PNG")
    cited_page._drawn.clear()
    store.bodies._cache(owner).delete(document.content_hash + SOURCE_SUFFIX)  # the PDF gone
    assert cited_page.cited_page_png(store, document, page_two, "the manual",
                                     owner=owner) == drawn  # from the cache on disk
    other = cited_page.cited_page_png(store, document, page_two, "www", owner=owner)
    assert other is None  # another quote needs the PDF, which is gone
    note = workspace.load_uploads([Upload("note.md", b"# Note\nText.")],
                                  workspace.ingest_options(include=[], exclude=[], password=None))
    assert cited_page.cited_page_png(store, note, page_two, "Text", owner=owner) is None
