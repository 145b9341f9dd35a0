"""DOCX in body order: headings become Markdown headings and section breaks, lists keep their
bullets and numbers, tables become Markdown tables (merged cells spread, not duplicated).
Tracked changes are shown as if accepted (insertions kept, deletions dropped) and said so;
comments are not included and said so. Headers, footers and footnotes come last."""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from ..documents import Section, SectionKind, clean_text
from ..errors import IngestError, UnsupportedFormatError

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_HEADING_STYLE = re.compile(r"^(?:heading\s*(\d)|title)$", re.IGNORECASE)
_BULLET_FORMATS = {"bullet", "none"}
_LIST_STYLE = re.compile(r"^List (Bullet|Number)(?: (\d))?$", re.IGNORECASE)


def _run_text(element: Any) -> str:
    parts = []
    for node in element.iter(f"{W}t", f"{W}tab", f"{W}br", f"{W}cr", f"{W}noBreakHyphen"):
        tag = node.tag
        if tag == f"{W}t":
            parts.append(node.text or "")
        elif tag == f"{W}tab":
            parts.append("\t")
        elif tag == f"{W}noBreakHyphen":
            parts.append("-")
        else:
            parts.append("\n")
    return "".join(parts)


class _Numbering:
    """numId → level → format, read once from the numbering part (bullets vs numbers)."""

    def __init__(self, document: Any) -> None:
        self._formats: dict[tuple[str, str], str] = {}
        try:
            root = document.part.numbering_part.element
        except Exception:
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


def _style_name(paragraph: Any, styles: dict[str, str]) -> str:
    ppr = paragraph.find(f"{W}pPr")
    style = ppr.find(f"{W}pStyle") if ppr is not None else None
    if style is None:
        return ""
    style_id = style.get(f"{W}val") or ""
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
                    span = int(grid.get(f"{W}val") or 1)
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


def _footnotes(document: Any) -> list[str]:
    from lxml import etree

    notes = []
    for part in document.part.package.iter_parts():
        if str(part.partname) != "/word/footnotes.xml":
            continue
        root = etree.fromstring(part.blob)
        for note in root.findall(f"{W}footnote"):
            if int(note.get(f"{W}id") or 0) <= 0:
                continue  # separators
            text = " ".join(t for p in note.iter(f"{W}p") if (t := _run_text(p).strip()))
            if text:
                notes.append(f"[^{note.get(f'{W}id')}]: {text}")
    return notes


def docx_sections(data: bytes, *, name: str) -> tuple[list[Section], list[str]]:
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UnsupportedFormatError(
            f"{name}: not a valid .docx (Word 2007+) file ({exc}); open it in Word or "
            "LibreOffice and save it as .docx again."
        ) from exc
    except Exception as exc:
        raise IngestError(f"{name}: the .docx could not be read ({exc}); re-save it and retry.") from exc

    styles = {s.style_id: s.name for s in document.styles if s.style_id}
    numbering = _Numbering(document)
    body = document.element.body
    warnings: list[str] = []
    if body.find(f".//{W}ins") is not None or body.find(f".//{W}del") is not None:
        warnings.append(f"{name}: has tracked changes; shown as if all were accepted.")
    if any(str(p.partname) == "/word/comments.xml" for p in document.part.package.iter_parts()):
        warnings.append(f"{name}: has comments; they are not included.")

    sections: list[Section] = []
    title = "(start)"
    lines: list[str] = []

    def flush() -> None:
        text = clean_text("\n".join(lines))
        if text.strip():
            sections.append(Section(SectionKind.HEADING, title, text))

    for child in body.iterchildren():
        if child.tag == f"{W}tbl":
            lines += ["", _table_markdown(child), ""]
            continue
        if child.tag != f"{W}p":
            continue
        text = _run_text(child).strip()
        if not text:
            continue
        heading = _HEADING_STYLE.match(_style_name(child, styles).strip())
        if heading:
            flush()
            title, lines = text, []
            depth = int(heading.group(1) or 1)
            lines += [f"{'#' * depth} {text}", ""]
            continue
        style = _style_name(child, styles)
        list_style = _LIST_STYLE.match(style)
        num_pr = child.find(f"{W}pPr/{W}numPr")
        if list_style and num_pr is None:
            indent = int(list_style.group(2) or 1) - 1
            marker = "-" if list_style.group(1).lower() == "bullet" else "1."
            lines.append(f"{'  ' * indent}{marker} {text}")
            continue
        if num_pr is not None:
            num_id = num_pr.find(f"{W}numId")
            ilvl = num_pr.find(f"{W}ilvl")
            level = ilvl.get(f"{W}val") if ilvl is not None else "0"
            marker = numbering.marker(num_id.get(f"{W}val") if num_id is not None else "", level)
            lines.append(f"{'  ' * int(level or 0)}{marker} {text}")
            continue
        lines += [text, ""]
    flush()

    extra: list[str] = []
    seen: set[tuple[str, str]] = set()
    for section in document.sections:
        for label, part in (("Header", section.header), ("Footer", section.footer)):
            try:
                if part.is_linked_to_previous and section is not document.sections[0]:
                    continue
                text = "\n".join(p.text.strip() for p in part.paragraphs if p.text.strip())
            except Exception:
                continue
            if text and (label, text) not in seen:
                seen.add((label, text))
                extra.append(f"{label}: {text}")
    notes = _footnotes(document)
    if extra:
        sections.append(Section(SectionKind.HEADING, "Headers and footers", clean_text("\n".join(extra))))
    if notes:
        sections.append(Section(SectionKind.HEADING, "Footnotes", clean_text("\n".join(notes))))
    if not sections:
        raise IngestError(f"{name}: the document has no text.")
    return sections, warnings
