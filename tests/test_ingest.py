"""Every format and every bad input from the foundation issue, each with a clear outcome."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import (
    LOREM,
    add_footnotes,
    make_contract_pdf,
    make_docx,
    make_pdf,
    make_tar_gz,
    make_zip,
    make_zip_bomb,
)

from sparkdocs.documents import DocumentKind, SectionKind
from sparkdocs.errors import (
    EncryptedDocumentError,
    FileTooLargeError,
    IngestError,
    UnsafeArchiveError,
    UnsupportedFormatError,
)
from sparkdocs.ingest import IngestOptions, Upload, ingest_bytes, ingest_uploads
from sparkdocs.sources import read_file, walk_codebase


def test_pdf_pages_with_markers_and_scanned_page_warning():
    document = ingest_bytes("c.pdf", make_pdf(["Page one text.", "", "Page three."]))
    assert document.kind is DocumentKind.PDF
    assert [s.title for s in document.sections] == ["1", "2", "3"]
    assert document.sections[0].text == "Page one text."
    assert any("1 of 3 pages have no text — scanned?" in w for w in document.warnings + document.skipped)


def test_pdf_all_scanned_is_an_error_that_says_ocr():
    with pytest.raises(IngestError, match="OCR"):
        ingest_bytes("scan.pdf", make_pdf(["", ""]))


def test_encrypted_pdf_needs_password_and_opens_with_it():
    data = make_pdf(["Top secret terms."], password="hunter2")
    with pytest.raises(EncryptedDocumentError, match="give its password"):
        ingest_bytes("locked.pdf", data)
    with pytest.raises(EncryptedDocumentError, match="password is wrong"):
        ingest_bytes("locked.pdf", data, options=IngestOptions(password="nope"))
    document = ingest_bytes("locked.pdf", data, options=IngestOptions(password="hunter2"))
    assert "Top secret terms." in document.sections[0].text


def test_truncated_pdf_is_a_clear_error():
    data = make_contract_pdf(5)
    with pytest.raises(IngestError, match="damaged or truncated"):
        ingest_bytes("cut.pdf", data[: len(data) // 3])


def test_docx_body_order_headings_lists_tables_headers_footnotes():
    document = ingest_bytes("msa.docx", make_docx())
    assert document.kind is DocumentKind.DOCX
    titles = [s.title for s in document.sections]
    assert titles[:3] == ["Master Services Agreement", "Payment", "Termination"]
    payment = document.sections[1].text
    assert payment.startswith("## Payment")
    assert "- First bullet" in payment and "1. Step one" in payment
    assert "| Merged header |  | r0c2 |" in payment  # merged cell spread, not duplicated
    assert "| r2c0 | r2c1 |  |" in payment  # vertical merge continuation left empty
    assert payment.index("Invoices") < payment.index("First bullet") < payment.index("| Merged")
    assert "Header: ACME Confidential" in document.sections[-1].text


def test_docx_footnotes_come_last():
    document = ingest_bytes("msa.docx", add_footnotes(make_docx()))
    assert document.sections[-1].title == "Footnotes"
    assert document.sections[-1].text == "[^1]: Interest accrues at 2% per month."


def test_docx_tracked_changes_shown_as_accepted_and_said_so():
    document = ingest_bytes("msa.docx", make_docx(tracked_change=True))
    termination = next(s for s in document.sections if s.title == "Termination").text
    assert "terminate with 30 days notice" in termination and "at any time" not in termination
    assert any("tracked changes" in w for w in document.warnings + document.skipped)


def test_docx_that_is_not_a_zip():
    with pytest.raises(UnsupportedFormatError, match="not a valid .docx"):
        ingest_bytes("fake.docx", b"this is not a zip at all")


@pytest.mark.parametrize("encoding,bom", [("utf-8", b""), ("utf-16", b""), ("utf-8-sig", b""),
                                          ("cp1252", b""), ("latin-1", b"")])
def test_text_encodings_are_detected(encoding, bom):
    text = "Café naïve — “quoted” façade résumé. " * 20 if encoding == "cp1252" else "Café naïve façade résumé. " * 20
    document = ingest_bytes("notes.txt", bom + text.encode(encoding))
    assert "Café naïve" in document.sections[0].text


def test_non_utf8_text_gets_a_warning():
    document = ingest_bytes("old.txt", ("Grüße aus München, schöne Größe. " * 30).encode("cp1252"))
    assert "Grüße" in document.sections[0].text
    assert any("not UTF-8" in w for w in document.warnings + document.skipped)


def test_newlines_normalised_and_markdown_split_on_headings():
    document = ingest_bytes("r.md", b"# Title\r\nintro\r\n\r\n## Part\r\nbody\r\n```\n# not a heading\n```\n")
    assert [s.title for s in document.sections] == ["Title", "Part"]
    assert "\r" not in "".join(s.text for s in document.sections)


def test_empty_file_and_unknown_binary():
    with pytest.raises(UnsupportedFormatError, match="empty"):
        ingest_bytes("empty.txt", b"")
    with pytest.raises(UnsupportedFormatError, match="binary"):
        ingest_bytes("blob.bin", b"\x00\x01\x02\xff" * 100)


def test_oversized_file_refused_from_its_size_before_reading(tmp_path: Path):
    huge = tmp_path / "huge.pdf"
    with huge.open("wb") as handle:  # a sparse 2 GiB file: no memory, no disk
        handle.truncate(2 * 2**30)
    with pytest.raises(FileTooLargeError, match="2,048.0 MiB is over the 200 MiB limit"):
        read_file(huge, IngestOptions())


def test_zip_codebase_tree_first_path_order_and_gitignore():
    data = make_zip({
        "proj/.gitignore": b"secret_dir/\n*.log\n",
        "proj/src/b.py": b"print('b')\n",
        "proj/src/a.py": b"print('a')\n",
        "proj/README.md": b"# Proj\n",
        "proj/debug.log": b"noise",
        "proj/secret_dir/x.py": b"x",
        "proj/node_modules/lib/index.js": b"x",
        "proj/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00",
        "proj/.env": b"TOKEN=abc",
        "proj/sub/.gitignore": b"gen.py\n",
        "proj/sub/gen.py": b"x",
        "proj/sub/keep.py": b"y = 1\n",
    })
    document = ingest_bytes("proj.zip", data)
    assert document.kind is DocumentKind.CODEBASE
    assert document.sections[0].kind is SectionKind.TREE
    paths = [s.title for s in document.sections[1:]]
    assert paths == [".gitignore", "README.md", "src/a.py", "src/b.py", "sub/.gitignore", "sub/keep.py"]
    notes = " ".join(document.warnings + document.skipped)
    assert "logo.png: binary" in notes and ".env: looks like a secret" in notes


def test_include_and_exclude_patterns():
    data = make_tar_gz({"r/src/a.py": b"a=1\n", "r/src/b.py": b"b=2\n", "r/docs/x.md": b"# x\n"})
    only_src = ingest_bytes("r.tar.gz", data, options=IngestOptions(include=("src/",), exclude=("b.py",)))
    assert [s.title for s in only_src.sections[1:]] == ["src/a.py"]


def test_zip_slip_is_refused():
    with pytest.raises(UnsafeArchiveError, match="zip slip"):
        ingest_bytes("evil.zip", make_zip({"ok.py": b"x", "../../etc/evil.py": b"x"}))


def test_zip_bomb_is_refused_without_unpacking():
    with pytest.raises(UnsafeArchiveError, match="zip bombs|over the"):
        ingest_bytes("bomb.zip", make_zip_bomb(64),
                     options=IngestOptions(max_unpacked_bytes=32 * 2**20))
    with pytest.raises(UnsafeArchiveError, match="zip bombs"):
        ingest_bytes("bomb.zip", make_zip_bomb(64))


def test_zip_symlink_member_is_not_followed():
    document = ingest_bytes("l.zip", make_zip({"a.py": b"x = 1\n"}, symlinks={"link": "/etc/passwd"}))
    assert [s.title for s in document.sections[1:]] == ["a.py"]
    assert "link: symbolic link, not followed" in " ".join(document.warnings + document.skipped)


def test_folder_symlink_outside_root_is_not_followed(tmp_path: Path):
    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "m.py").write_text("m = 1\n")
    (root / "escape.txt").symlink_to(outside)
    (root / "big.txt").write_bytes(b"x" * 2_000_000)
    source = walk_codebase(root, IngestOptions())
    assert [f.path for f in source.files] == ["pkg/m.py"]
    notes = " ".join(source.notes)
    assert "escape.txt: symbolic link pointing outside" in notes
    assert "big.txt" in notes and "per-file limit" in notes


def test_many_files_make_one_document_with_a_section_per_file():
    document = ingest_uploads([Upload("b.txt", b"second"), Upload("a.md", b"# first\ntext"),
                               Upload("c.pdf", make_pdf(["pdf page"]))])
    assert document.kind is DocumentKind.FILES
    assert [s.title for s in document.sections] == ["b.txt", "a.md", "c.pdf p.1"]  # in the order given


def test_same_bytes_same_key_regardless_of_name():
    data = LOREM.encode()
    assert ingest_bytes("x.txt", data).content_hash == ingest_bytes("renamed.txt", data).content_hash
    assert ingest_bytes("x.txt", data).content_hash != ingest_bytes("x.md", data).content_hash


def test_pdfium_soft_hyphens_are_removed_and_the_word_joined():
    """PDFium reports a typesetter's line-end hyphen as U+FFFE inside the word; the page text
    has the whole word, and no U+FFFE anywhere."""
    import pypdfium2
    from builders import make_soft_hyphen_pdf

    from sparkdocs.ingest.pdf import join_soft_hyphens

    data = make_soft_hyphen_pdf()
    raw = pypdfium2.PdfDocument(data)[0].get_textpage().get_text_range()
    assert "\ufffe" in raw  # the evidence that PDFium marks it (else this test proves nothing)
    page = ingest_bytes("goods.pdf", data).sections[0].text
    assert "\ufffe" not in page and "The goods are dangerous and must be packed" in page
    assert join_soft_hyphens("dan\ufffe\r\ngerous goods\nnext") == "dangerous goods\nnext"
    assert join_soft_hyphens("mid\ufffeword, end\ufffe \n  next") == "midword, endnext"
