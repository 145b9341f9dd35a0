"""The cited page of a PDF as an image (see page_image), for a source shown in the app: from
the original file kept with the document, for its owner (and, for an encrypted PDF, with the
password this reader proved). Drawn pages are kept, in memory and beside the PDF in the
document cache (an encrypted PDF's only in memory): every rerun of the Ask page builds every
source's view again, and a reopened session may hold many sources."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict

from .citations import Locator
from .documents import Document, DocumentKind, SectionKind
from .page_image import PageImageError, page_png
from .store import Store

log = logging.getLogger(__name__)

DRAWN_KEPT = 32  # drawn pages kept in memory (about 100-300 KB each)
_drawn: OrderedDict[tuple[str, ...], bytes | None] = OrderedDict()
_lock = threading.Lock()


def cited_page_png(store: Store, document: Document, locator: Locator, quote: str, *,
                   owner: str, password: str | None = None) -> bytes | None:
    """PNG bytes of the page `locator` names with `quote` highlighted; None when there is no
    page to draw: not a PDF of its own (a set, text, a codebase), not a page, or its original
    not kept (documents read before originals were kept, or over the cache's limit)."""
    if (document.kind is not DocumentKind.PDF or document.members
            or locator.kind is not SectionKind.PAGE or not locator.title.isdigit()):
        return None
    secret = hashlib.sha256((password or "").encode()).hexdigest()
    key = (document.content_hash, owner, locator.title, quote, secret)
    with _lock:
        if key in _drawn:
            _drawn.move_to_end(key)
            return _drawn[key]
    # drawn once per page and quote, kept on disk beside the PDF (reopening a session with
    # many sources must not draw them all again); never for a password not proved here
    suffix = ".page." + hashlib.sha256(f"{locator.title}\0{quote}".encode()).hexdigest()[:24]
    bodies = store.bodies
    drawn = None if password else bodies.get_source(document.content_hash, owner=owner,
                                                    suffix=suffix)
    pdf = None if drawn else bodies.get_source(document.content_hash, owner=owner)
    if pdf is not None:
        try:
            drawn = page_png(pdf, int(locator.title), quote=quote, password=password)
        except PageImageError as exc:
            log.info("page %s of %s not drawn: %s", locator.title, document.name, exc)
        if drawn and not password:
            bodies.put_source(document.content_hash, drawn, owner=owner, suffix=suffix)
    with _lock:
        _drawn[key] = drawn
        while len(_drawn) > DRAWN_KEPT:
            _drawn.popitem(last=False)
    return drawn
