"""DOCX in body order: headings become Markdown headings and section breaks, lists keep their
bullets and numbers, tables become Markdown tables (merged cells spread, not duplicated).
Tracked changes are shown as if accepted (insertions kept, deletions dropped) and said so;
comments are not included and said so. Headers, footers and footnotes come last.

A DOCX is a zip, so it is checked like one before anything is inflated: only the XML parts are
read (media and embedded files never are: a 2 GB declared image took 4.3 GB of memory when
python-docx loaded every part), their declared sizes must stay under `max_docx_xml_bytes`
(64 MiB; lxml needs several times that while parsing) and their compression ratios under
`max_compression_ratio`, and reads stop at the declared size. Every XML part is parsed once
with entities and network access off before python-docx sees it, so a malformed part is
named in a per-file error (or, for footnotes, left out with a warning).

The body (word/document.xml) is never held as a tree: it is streamed twice with lxml's
iterparse, each top-level paragraph or table turned into text and dropped as soon as it ends.
The first pass only checks it and keeps its section properties, which python-docx then reads
(with styles, numbering, headers and footers) from a copy of the package whose body holds
nothing else; the second writes the text. A million one-word paragraphs cost their text, not
~750 MB of element tree."""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..documents import Section, SectionKind, clean_text
from ..errors import IngestError, UnsafeArchiveError, UnsupportedFormatError
from .code import check_zip_entries
from .options import IngestOptions

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_HEADING_STYLE = re.compile(r"^(?:heading\s*(\d)|title)$", re.IGNORECASE)
_BULLET_FORMATS = {"bullet", "none"}
_LIST_STYLE = re.compile(r"^List (Bullet|Number)(?: (\d))?$", re.IGNORECASE)
_DEFAULTS = IngestOptions()
_XML_SUFFIXES = (".xml", ".rels")
_MAX_PARTS = 10_000
# Parts whose text sparkdocs reads itself: a malformed one is left out with a warning.
_OPTIONAL_PARTS = {"word/footnotes.xml": "footnotes", "word/endnotes.xml": "endnotes"}


_MAX_COLUMNS = 63  # Word's own table limit: a gridSpan of 10**9 must not make 10**9 cells


def _small_int(value: str | None, *, default: int, low: int, high: int) -> int:
    """An integer attribute from the file, clamped: a hostile value neither raises nor
    multiplies memory."""
    try:
        number = int(value) if value is not None else default
    except ValueError:
        return default
    return max(low, min(high, number))


def _safe_parser() -> Any:
    from lxml import etree

    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           huge_tree=False)


def _xml_only(data: bytes, *, name: str, options: IngestOptions  # noqa: C901 (over the limit; split when next changed)
              ) -> tuple[bytes, dict[str, bytes], list[str], str]:
    """The package with every non-XML part emptied (never inflated) and the XML parts checked
    from their declared sizes and ratios, then read (at most the declared size, as zipfile
    enforces) and parsed once; the body is left for `_read_body` to stream and replaced by a
    stub. Returns (package, optional parts that parsed, warnings, the body's part name)."""
    from lxml import etree

    check_zip_entries(data, name=name, limit=_MAX_PARTS)
    try:
        source = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, NotImplementedError, EOFError) as exc:
        raise UnsupportedFormatError(
            f"{name}: not a valid .docx (Word 2007+) file ({exc}); open it in Word or "
            "LibreOffice and save it as .docx again.") from exc
    infos = source.infolist()
    xml = [i for i in infos if i.filename.lower().endswith(_XML_SUFFIXES) and not i.is_dir()]
    xml_names = {i.filename for i in xml}
    declared = sum(i.file_size for i in xml)
    limit = options.max_docx_xml_bytes
    if declared > limit:
        raise UnsafeArchiveError(
            f"{name}: its XML parts unpack to {declared / 2**20:,.0f} MiB, over the "
            f"{limit / 2**20:,.0f} MiB limit for a .docx; split the document into smaller files.")
    for info in xml:
        if info.file_size > 1_000_000 and (
                info.file_size / max(info.compress_size, 1) > options.max_compression_ratio):
            raise UnsafeArchiveError(
                f"{name}: part {info.filename} has a compression ratio of "
                f"{info.file_size / max(info.compress_size, 1):,.0f}:1, over "
                f"{options.max_compression_ratio:,.0f}:1, which is how zip bombs look; "
                "refusing it. Re-save the document in Word.")
    buffer = io.BytesIO()
    optional: dict[str, bytes] = {}
    warnings: list[str] = []
    main_name = _main_part_name(source, xml_names)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as target:
        for info in infos:
            if info.is_dir():
                continue
            if info.filename not in xml_names:
                target.writestr(info.filename, b"")
                continue
            if info.filename == main_name:  # streamed later, never whole: python-docx
                target.writestr(info.filename, _EMPTY_BODY)  # reads the rest beside a stub
                continue
            part = _read_part(source, info, name=name)
            try:
                etree.fromstring(part, parser=_safe_parser())
            except etree.XMLSyntaxError as exc:
                label = _OPTIONAL_PARTS.get(info.filename)
                if label is None:
                    raise IngestError(
                        f"{name}: part {info.filename} is not well-formed XML ({exc}); open the "
                        "document in Word or LibreOffice and save it again.") from exc
                warnings.append(f"{name}: {info.filename} is not well-formed XML ({exc}); "
                                f"its {label} are left out.")
            else:
                if info.filename in _OPTIONAL_PARTS:  # python-docx keeps these as opaque blobs
                    optional[info.filename] = part
            target.writestr(info.filename, part)
    if main_name not in xml_names:
        raise UnsupportedFormatError(
            f"{name}: not a valid .docx (Word 2007+) file (no {main_name}); open it in Word "
            "or LibreOffice and save it as .docx again.")
    return buffer.getvalue(), optional, warnings, main_name


def _read_part(source: zipfile.ZipFile, info: zipfile.ZipInfo, *, name: str) -> bytes:
    try:
        return source.read(info)
    except _UNPACK_ERRORS as exc:  # damaged, encrypted or odd members
        raise UnsupportedFormatError(
            f"{name}: part {info.filename} cannot be unpacked ({exc}); re-save the "
            "document in Word or LibreOffice.") from exc


_UNPACK_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
                  RuntimeError, ValueError)
_OFFICE_DOCUMENT = "/officeDocument"


def _main_part_name(source: zipfile.ZipFile, xml_names: set[str]) -> str:
    """The body's part, as the package's own relationships name it (word/document.xml in
    every file Word writes)."""
    from lxml import etree

    if "_rels/.rels" in xml_names:
        try:
            root = etree.fromstring(source.read("_rels/.rels"), parser=_safe_parser())
        except (etree.XMLSyntaxError, *_UNPACK_ERRORS):
            return "word/document.xml"
        for rel in root.iter("{*}Relationship"):
            if (rel.get("Type") or "").endswith(_OFFICE_DOCUMENT) and rel.get("Target"):
                return str(rel.get("Target")).lstrip("/")
    return "word/document.xml"


_EMPTY_BODY = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
               b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/'
               b'main"><w:body/></w:document>')


@dataclass
class _Body:
    """What one pass over the body keeps: its sections of text, whether it has tracked
    changes, and its section properties (each break's, then the last: they hold the header
    and footer references), as XML."""

    sections: list[Section]
    tracked: bool = False
    breaks: list[bytes] = field(default_factory=list)
    last: bytes | None = None


_P, _TBL, _BODY = f"{W}p", f"{W}tbl", f"{W}body"
_SECTPR, _INS, _DEL = f"{W}sectPr", f"{W}ins", f"{W}del"
_BODY_TAGS = (_P, _TBL, _SECTPR, _INS, _DEL)


def _body_elements(source: zipfile.ZipFile, info: zipfile.ZipInfo, *, name: str
                   ) -> Iterator[Any]:
    """The body part's paragraphs, tables, section properties and tracked changes as each
    ends, streamed from the zip. A top-level paragraph or table is emptied and dropped with
    everything before it once it has been handled, so memory holds one at a time."""
    from lxml import etree

    try:
        with source.open(info) as stream:
            for _, element in etree.iterparse(
                    stream, events=("end",), tag=_BODY_TAGS, resolve_entities=False,
                    no_network=True, load_dtd=False, huge_tree=False):
                yield element
                parent = element.getparent()
                if element.tag in (_P, _TBL) and parent is not None and \
                        parent.tag == _BODY:
                    element.clear()
                    while element.getprevious() is not None:
                        del parent[0]
    except etree.XMLSyntaxError as exc:
        raise IngestError(
            f"{name}: part {info.filename} is not well-formed XML ({exc}); open the "
            "document in Word or LibreOffice and save it again.") from exc
    except _UNPACK_ERRORS as exc:
        raise UnsupportedFormatError(
            f"{name}: part {info.filename} cannot be unpacked ({exc}); re-save the "
            "document in Word or LibreOffice.") from exc


def _restore_section_properties(document: Any, body: _Body) -> None:
    """Put the body's section properties into python-docx's stub body, so that its sections
    (headers, footers) are the document's."""
    from docx.oxml import OxmlElement, parse_xml

    stub = document.element.body
    for xml in body.breaks:
        paragraph, properties = OxmlElement("w:p"), OxmlElement("w:pPr")
        properties.append(parse_xml(xml))
        paragraph.append(properties)
        stub.append(paragraph)
    if body.last is not None:
        stub.append(parse_xml(body.last))


_TEXT_TAGS = (f"{W}t", f"{W}tab", f"{W}br", f"{W}cr", f"{W}noBreakHyphen")
_SPECIAL_TEXT = {f"{W}tab": "\t", f"{W}noBreakHyphen": "-", f"{W}br": "\n", f"{W}cr": "\n"}


def _run_text(element: Any) -> str:
    return "".join(node.text or "" if node.tag == _TEXT_TAGS[0] else _SPECIAL_TEXT[node.tag]
                   for node in element.iter(*_TEXT_TAGS))


class _Numbering:
    """numId → level → format, read once from the numbering part (bullets vs numbers)."""

    def __init__(self, document: Any) -> None:
        self._formats: dict[tuple[str, str], str] = {}
        try:
            root = document.part.numbering_part.element
        except (NotImplementedError, KeyError):  # no numbering part
            return
        abstract = {}
        for node in root.findall(f"{W}abstractNum"):
            levels = {}
            for lvl in node.findall(f"{W}lvl"):
                fmt = lvl.find(f"{W}numFmt")
                levels[lvl.get(f"{W}ilvl")] = fmt.get(f"{W}val") if fmt is not None else "bullet"
            abstract[node.get(f"{W}abstractNumId")] = levels
        for num in root.findall(f"{W}num"):
            ref = num.find(f"{W}abstractNumId")
            if ref is None:
                continue
            for level, fmt in abstract.get(ref.get(f"{W}val"), {}).items():
                self._formats[(num.get(f"{W}numId"), level)] = fmt

    def marker(self, num_id: str, level: str) -> str:
        fmt = self._formats.get((num_id, level), "bullet")
        return "-" if fmt in _BULLET_FORMATS else "1."


_PPR, _PSTYLE, _VAL, _NUMPR = f"{W}pPr", f"{W}pStyle", f"{W}val", f"{W}numPr"


def _style_name(paragraph: Any, styles: dict[str, str]) -> str:
    ppr = paragraph.find(_PPR)
    style = ppr.find(_PSTYLE) if ppr is not None else None
    if style is None:
        return ""
    style_id = style.get(_VAL) or ""
    return styles.get(style_id, style_id)


def _cell_text(cell: Any) -> str:
    text = "<br>".join(t for p in cell.iter(f"{W}p") if (t := _run_text(p).strip()))
    return text.replace("|", "\\|").replace("\n", "<br>")


def _table_markdown(table: Any) -> str:
    rows: list[list[str]] = []
    for tr in table.findall(f"{W}tr"):
        row: list[str] = []
        for tc in tr.findall(f"{W}tc"):
            tcpr = tc.find(f"{W}tcPr")
            span, continued = 1, False
            if tcpr is not None:
                grid = tcpr.find(f"{W}gridSpan")
                if grid is not None:
                    span = _small_int(grid.get(f"{W}val"), default=1, low=1, high=_MAX_COLUMNS)
                vmerge = tcpr.find(f"{W}vMerge")
                continued = vmerge is not None and vmerge.get(f"{W}val") in (None, "continue")
            row.append("" if continued else _cell_text(tc))
            row.extend([""] * (span - 1))
        rows.append(row)
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def _footnotes(optional: dict[str, bytes]) -> list[str]:
    from lxml import etree

    notes: list[str] = []
    blob = optional.get("word/footnotes.xml")
    if blob is None:
        return notes
    root = etree.fromstring(blob, parser=_safe_parser())
    for note in root.findall(f"{W}footnote"):
        try:
            if int(note.get(f"{W}id") or 0) <= 0:
                continue  # separators
        except ValueError:
            continue
        text = " ".join(t for p in note.iter(f"{W}p") if (t := _run_text(p).strip()))
        if text:
            notes.append(f"[^{note.get(f'{W}id')}]: {text}")
    return notes


def docx_sections(data: bytes, *, name: str, options: IngestOptions = _DEFAULTS
                  ) -> tuple[list[Section], list[str]]:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    package, optional, warnings, main_name = _xml_only(data, name=name, options=options)
    try:
        document = docx.Document(io.BytesIO(package))
    except (zipfile.BadZipFile, KeyError, ValueError, PackageNotFoundError) as exc:
        raise UnsupportedFormatError(
            f"{name}: not a valid .docx (Word 2007+) file ({exc}); open it in Word or "
            "LibreOffice and save it as .docx again."
        ) from exc

    styles = {s.style_id: s.name for s in document.styles if s.style_id}
    source = zipfile.ZipFile(io.BytesIO(data))
    body = _read_body(source, source.getinfo(main_name), name=name, styles=styles,
                      numbering=_Numbering(document))
    _restore_section_properties(document, body)
    if body.tracked:
        warnings.append(f"{name}: has tracked changes; shown as if all were accepted.")
    if any(str(p.partname) == "/word/comments.xml" for p in document.part.package.iter_parts()):
        warnings.append(f"{name}: has comments; they are not included.")
    return _with_extras(document, body.sections, optional, name=name), warnings


class _Lines:
    """A section's lines, joined in batches as they come in, so that a million short
    paragraphs are a few hundred strings rather than a million."""

    def __init__(self) -> None:
        self._joined: list[str] = []
        self._lines: list[str] = []

    def add(self, *lines: str) -> None:
        self._lines.extend(lines)
        if len(self._lines) > 4096:
            self._joined.append("\n".join(self._lines))
            self._lines = []

    def text(self) -> str:
        return "\n".join([*self._joined, *self._lines])


def _read_body(source: zipfile.ZipFile, info: zipfile.ZipInfo, *, name: str,
               styles: dict[str, str], numbering: _Numbering) -> _Body:
    """The body in order, one top-level paragraph or table at a time (`_body_elements`)."""
    from lxml import etree

    body = _Body([])
    title = "(start)"
    lines = _Lines()

    def flush() -> None:
        text = clean_text(lines.text())
        if text.strip():
            body.sections.append(Section(SectionKind.HEADING, title, text))

    for child in _body_elements(source, info, name=name):
        parent = child.getparent()
        if child.tag in (_INS, _DEL):
            body.tracked = True
        elif child.tag == _SECTPR:
            if parent.tag == _BODY:
                body.last = etree.tostring(child)
            elif parent.tag == _PPR and parent.getparent().getparent().tag == _BODY:
                body.breaks.append(etree.tostring(child))
        elif parent is None or parent.tag != _BODY:
            continue  # a paragraph in a table: read with its table
        elif child.tag == _TBL:
            lines.add("", _table_markdown(child), "")
        elif text := _run_text(child).strip():
            style = _style_name(child, styles)
            heading = _HEADING_STYLE.match(style.strip()) if style else None
            if heading:
                flush()
                title, lines = text, _Lines()
                lines.add(f"{'#' * int(heading.group(1) or 1)} {text}", "")
            else:
                lines.add(*_paragraph_lines(child, text, style=style, numbering=numbering))
    flush()
    return body


def _paragraph_lines(paragraph: Any, text: str, *, style: str,
                     numbering: _Numbering) -> tuple[str, ...]:
    """A body paragraph as Markdown: a list item keeps its marker and depth."""
    ppr = paragraph.find(_PPR)
    num_pr = ppr.find(_NUMPR) if ppr is not None else None
    if num_pr is None and not style:
        return (text, "")
    list_style = _LIST_STYLE.match(style)
    if list_style and num_pr is None:
        indent = int(list_style.group(2) or 1) - 1
        marker = "-" if list_style.group(1).lower() == "bullet" else "1."
        return (f"{'  ' * indent}{marker} {text}",)
    if num_pr is not None:
        num_id = num_pr.find(f"{W}numId")
        ilvl = num_pr.find(f"{W}ilvl")
        level = ilvl.get(f"{W}val") if ilvl is not None else "0"
        marker = numbering.marker(num_id.get(f"{W}val") if num_id is not None else "", level)
        depth = _small_int(level, default=0, low=0, high=8)  # Word has 9 list levels
        return (f"{'  ' * depth}{marker} {text}",)
    return (text, "")


def _with_extras(document: Any, sections: list[Section], optional: dict[str, bytes], *,
                 name: str) -> list[Section]:
    """Headers, footers and footnotes, after the body."""
    extra: list[str] = []
    seen: set[tuple[str, str]] = set()
    for section in document.sections:
        for label, part in (("Header", section.header), ("Footer", section.footer)):
            try:
                if part.is_linked_to_previous and section is not document.sections[0]:
                    continue
                text = "\n".join(p.text.strip() for p in part.paragraphs if p.text.strip())
            except (KeyError, ValueError, NotImplementedError):  # a missing or odd part
                continue
            if text and (label, text) not in seen:
                seen.add((label, text))
                extra.append(f"{label}: {text}")
    notes = _footnotes(optional)
    if extra:
        sections.append(Section(SectionKind.HEADING, "Headers and footers", clean_text("\n".join(extra))))
    if notes:
        sections.append(Section(SectionKind.HEADING, "Footnotes", clean_text("\n".join(notes))))
    if not sections:
        raise IngestError(f"{name}: the document has no text.")
    return sections
