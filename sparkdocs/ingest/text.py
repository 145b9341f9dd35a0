"""Plain text and Markdown: detect the encoding, normalise newlines, split into sections."""

from __future__ import annotations

import codecs
import re
import unicodedata

from ..documents import Section, SectionKind, clean_text
from ..errors import UnsupportedFormatError

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
PART_CHARS = 16_000  # plain text is split near here so parts of a long file can be chosen
_MARKDOWN_HEADING = re.compile(r"^(#{1,6})\s+(.+)$")


def looks_binary(data: bytes) -> bool:
    """NUL bytes early on (and no UTF-16/32 BOM) mean binary, as git decides."""
    head = data[:8192]
    if any(head.startswith(bom) for bom, _ in _BOMS):
        return False
    return b"\x00" in head


# Decoding follows what browsers do with an undeclared file: UTF-8 when the bytes are UTF-8
# (unless only the cp1252 reading makes sense), with a few stray bytes replaced and counted
# (at least four valid sequences for each: a letter and a symbol in cp1252 text make one by
# chance), else Windows-1252, the de-facto Western default, unless cp1252 cannot decode the
# bytes or reads them as no Western text is written (then charset-normalizer chooses). Both
# checks see a sample (the bytes around non-ASCII runs, at most SAMPLE_BYTES), so a 50 MB
# file costs what a small one does.
SAMPLE_BYTES = 64 * 1024
_NON_ASCII = re.compile(rb"[\x80-\xff]+")

def decode_text(data: bytes, *, name: str) -> tuple[str, str | None]:
    """Returns (text, warning): BOMs first, then UTF-8 (strict, then tolerant of a few stray
    bytes), then a single-byte code page (Windows-1252 unless the evidence says otherwise)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace"), None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if not _cp1252_not_utf8(data):
            return text, None
        try:
            legacy_text = data.decode("cp1252")
        except UnicodeDecodeError:  # beyond the sample the bytes are no cp1252 at all
            return text, None
        return legacy_text, _legacy_warning(name, "cp1252")
    if looks_binary(data):
        raise UnsupportedFormatError(
            f"{name}: this is a binary file, not text, PDF or DOCX; "
            "convert it to one of those formats first."
        )
    text = data.decode("utf-8", errors="replace")
    stray = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
    valid = len(text) - len(text.encode("ascii", errors="ignore")) - text.count("\ufffd")
    if valid > 0 and 4 * stray <= valid:  # `“OÙ”` in cp1252 holds one valid pair, `Ù”`
        return text, (f"{name}: {stray:,} byte{'s' if stray != 1 else ''} not valid UTF-8 "
                      "were replaced with \ufffd (the rest is UTF-8); re-save the file as UTF-8 "
                      "to keep them.")
    del text
    legacy = _legacy_encoding(data)
    if legacy is None:
        raise UnsupportedFormatError(
            f"{name}: the text encoding could not be detected; save it as UTF-8 and try again."
        )
    return data.decode(legacy, errors="replace"), _legacy_warning(name, legacy)


def _legacy_warning(name: str, encoding: str) -> str:
    label = "Windows-1252 (cp1252)" if encoding == "cp1252" else encoding
    return (f"{name}: not UTF-8; decoded as {label}. If characters look wrong, save the file "
            "as UTF-8 and load it again.")


def _cp1252_not_utf8(data: bytes) -> bool:
    """Valid UTF-8 that is cp1252 all the same: short Western text can be valid UTF-8 by
    chance (an accented capital ending a word, then `…` or a closing quote: `É…` is the bytes
    of `Ʌ`, `AVÔ…` of `AVԅ`). Reading real UTF-8 as cp1252 garbles a whole document, the other
    mistake a character or two, so the evidence must be plain: the file decodes as cp1252
    and reads as Western text; at least half of the UTF-8 reading's characters beyond
    ASCII are absurd where they stand (`_absurd_at`); and each of those is, in cp1252, a word
    ending in an accented letter and closing punctuation (`É…`, `perché\xa0»`), never letters
    and signs inside a word (`pаypal`, `iPhone版`)."""
    sample = _sample(data)
    if not _decodes(sample, "cp1252") or not _reads_as_western(sample.decode("cp1252")):
        return False
    utf8 = sample.decode("utf-8", errors="replace")
    beyond = [index for match in _NON_ASCII_RUN.finditer(utf8)
              for index in range(match.start(), match.end())]
    absurd = [index for index in beyond if _absurd_at(utf8, index)]
    return (bool(absurd) and 2 * len(absurd) >= len(beyond)
            and all(_word_end_in_cp1252(utf8, index) for index in absurd))


# What follows a word directly in Western text (`là…»`, `perché\xa0»`, `Intel®`).
_CLOSERS = frozenset("…”’»›“\xa0")
_AFTER_A_WORD = _CLOSERS | frozenset("®™°©")


def _word_end_in_cp1252(utf8: str, index: int) -> bool:
    """Whether the character at `index`, its bytes read as cp1252, is an accented letter
    ending a word followed by closing punctuation."""
    legacy = utf8[index].encode("utf-8").decode("cp1252", errors="replace")
    lead, rest = legacy[0], legacy[1:]
    if not lead.isalpha() or (index + 1 < len(utf8) and utf8[index + 1].isalpha()):
        return False
    return rest in _AFTER_A_WORD if len(rest) == 1 else all(c in _CLOSERS for c in rest)


# Letters of Latin Extended-B and the IPA block that living orthographies write: African
# alphabets, Azeri ə, Khoisan clicks, the ʻokina, Vietnamese ơ ư, Pinyin ǎ…ǜ, Croatian ǆ,
# Sami ǥ ǧ ǩ ǯ, Livonian ǟ ȯ, Kabiyè Ɩ Ʊ, Romanian ș ț. The rest is phonetics, dialectology
# or history.
_LIVING_LATIN = frozenset(
    "ƏəƐɛƆɔƊɗƁɓƳƴƘƙƝɲŊŋƔɣƲʋƩʃƷʒƉɖƎǝƑƒƗɨɄʉⱭɑƜɯǀǁǂǃʻʼʔƠơƯưƖɩƱʊ"
    + "".join(chr(code) for code in range(0x1C4, 0x1F6))
    + "ȘșȚțȮȯȪȫȬȭȰȱȲȳ"
)
_IPA = range(0x250, 0x2B0)
# Scripts that a chance reading of cp1252 bytes lands in (two-byte UTF-8 beyond Latin and
# Greek) and that real text never glues to a Latin letter, with their digits and signs;
# beyond them, any letter of three-byte UTF-8 (Indic, CJK, Hangul: `perché\xa0»` is the
# bytes of `perch頻`) but Latin's and Greek's. Greek is glued to Latin in real text (TNFα,
# 5 µg, 10 kΩ), and so are symbols.
_NEVER_BESIDE_LATIN = frozenset({
    "CYRILLIC", "ARMENIAN", "HEBREW", "ARABIC", "ARABIC-INDIC", "EXTENDED", "SYRIAC",
    "THAANA", "NKO", "SAMARITAN", "MANDAIC"})
# Scripts no one-letter word is written in: a letter of theirs with no letter of its own
# script beside it is a chance reading.
_RARE_SCRIPTS = frozenset({"SYRIAC", "THAANA", "NKO", "SAMARITAN", "MANDAIC"})


def _capitals_then_small(text: str, index: int) -> bool:
    """`QUɔ`: a small letter ending a word of capitals, as `QUÉ”` reads in UTF-8."""
    return (text[index].islower() and index >= 2 and text[index - 1].isupper()
            and text[index - 2].isupper()
            and not (index + 1 < len(text) and text[index + 1].isalpha()))


def _script(char: str) -> str:
    """The script of a character, the first word of its name after compatibility folding
    (`ℓ` is `l`, `²` is `2`, `µ` is Greek `μ`); Latin-1 and Latin Extended are Latin."""
    folded = unicodedata.normalize("NFKC", char)[:1] or char
    if folded < "\u0250":
        return "LATIN"
    return unicodedata.name(folded, "?").split(" ")[0]


def _latin_letter(char: str) -> bool:
    return char.isalpha() and _script(char) == "LATIN"


def _absurd_at(text: str, index: int) -> bool:
    """Whether the character at `index` of the UTF-8 reading is one real text does not hold
    where it stands: a C1 control or unassigned code point; a letter, digit, mark or sign of
    a script never glued to Latin touching a Latin letter; a mark with no letter it belongs
    to; a letter of Latin Extended-B no living language writes, as a capital, after one or
    alone; a phonetic letter after a capital; a small letter ending a word of capitals; a
    letter of a rare script standing alone. Symbols (² ½ ™ ×) and Greek are no evidence."""
    char = text[index]
    category = unicodedata.category(char)
    if category in ("Cc", "Cn", "Co"):  # C1 controls, unassigned, private use
        return True
    before = text[index - 1] if index > 0 else " "
    after = text[index + 1] if index + 1 < len(text) else " "
    if category.startswith("M"):
        return _mark_absurd(text, index)
    script = _script(char)
    if _never_beside_latin(char, script) and (_latin_letter(before) or _latin_letter(after)):
        return True
    if not char.isalpha():
        return False
    if 0x180 <= ord(char) < _IPA.start and char not in _LIVING_LATIN:
        return char.isupper() or before.isupper() or not (before.isalpha() or after.isalpha())
    if ord(char) in _IPA and char not in _LIVING_LATIN:
        return before.isupper()  # `/ʌ/` is phonetics, `QUʀ` none
    if script == "LATIN":
        return _capitals_then_small(text, index)
    return script in _RARE_SCRIPTS and not any(
        near.isalpha() and _script(near) == script for near in (before, after))


def _never_beside_latin(char: str, script: str) -> bool:
    if script in ("LATIN", "GREEK"):
        return False
    return script in _NEVER_BESIDE_LATIN or (char >= "\u0800" and char.isalpha())


def _mark_absurd(text: str, index: int) -> bool:
    """A combining mark needs a letter to carry it; a Latin letter carries the common
    diacritics (composed or not: `n̄`) but not another script's marks (`U` + ypogegrammeni,
    `O` + hamza), unless the pair composes."""
    char = text[index]
    base = index - 1
    while base >= 0 and unicodedata.category(text[base]).startswith("M"):
        base -= 1
    if base < 0 or not text[base].isalpha():
        return True
    if "\u0300" <= char <= "\u036f":
        return "GREEK" in unicodedata.name(char, "") and _script(text[base]) != "GREEK"
    cluster = text[base:index + 1]
    return (_script(text[base]) != _script(char)
            and len(unicodedata.normalize("NFC", cluster)) == len(cluster))


def _sample(data: bytes, limit: int = SAMPLE_BYTES) -> bytes:
    """The bytes around non-ASCII runs (where the evidence is), at most `limit` of them."""
    if len(data) <= limit:
        return data
    pieces: list[bytes] = []
    size, last_end = 0, 0
    for match in _NON_ASCII.finditer(data):
        start, end = max(match.start() - 40, last_end), min(match.end() + 40, len(data))
        if start > last_end and pieces:
            pieces.append(b"\n")
        pieces.append(data[start:end])
        size, last_end = size + end - start, end
        if size >= limit:
            break
    return b"".join(pieces) or data[:limit]


def _legacy_encoding(data: bytes) -> str | None:
    """cp1252 when it reads the bytes as Western text could be written, as a browser with a
    Western locale does; charset-normalizer's best guess only when cp1252 cannot decode them
    or reads them as no Western text is. Its scores are no evidence on short text (every
    reading scores 0, and it stops before trying cp1252: `über` came out as UTF-16 `ﱢ敲`,
    `€ 100` as cp1125 `А 100`), nor between Latin-script code pages, which tie."""
    from charset_normalizer import from_bytes

    sample = _sample(data)
    if _decodes(data, "cp1252") and _reads_as_western(sample.decode("cp1252")):
        return "cp1252"
    best = from_bytes(sample).best()
    if best is None:
        return "cp1252" if _decodes(data, "cp1252") else None
    return best.encoding


# What Western text written in cp1252 never holds, and other code pages read as cp1252 do:
# four non-ASCII letters in a row (Cyrillic, Greek, Hebrew, Arabic bytes: `Ïðèâåò`; rules and
# leaders of dashes, dots and bullets are not letters), or a letter of Central European and
# Baltic code pages that is a symbol in cp1252 inside a word (Polish cp1250: `by³o`,
# `Za¿ó³æ`; not `x³y`). Symbols both code pages share (`L×B×H`, `Intel®Core`) are no evidence.
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f\xa0]+")
_NON_ASCII_LETTERS = re.compile(r"[^\W\d_\x00-\x7f¹²³¼½¾]{4,}")
_CP1250_LETTERS_AS_SYMBOLS = frozenset("¡£¥¨¯³¸¹¼¾¿")


def _reads_as_western(text: str) -> bool:
    if _NON_ASCII_LETTERS.search(text):
        return False
    for match in _NON_ASCII_RUN.finditer(text):
        for index in range(match.start(), match.end()):
            if text[index] in _CP1250_LETTERS_AS_SYMBOLS and _inside_a_word(text, index):
                return False
    return True


def _inside_a_word(text: str, index: int) -> bool:
    """Letters on both sides of `index`, at least two on one side."""
    before = after = 0
    while before < 2 and index - before > 0 and text[index - before - 1].isalpha():
        before += 1
    while after < 2 and index + after + 1 < len(text) and text[index + after + 1].isalpha():
        after += 1
    return before >= 1 and after >= 1 and max(before, after) >= 2


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _heading(line: str) -> str | None:
    """The title of an ATX heading line, or None. Trailing `#`s and spaces are stripped in
    Python: the one-regex form (`\\s+(.+?)\\s*#*\\s*$`) backtracks cubically, and a heading
    followed by 2,000 spaces and a letter took 19 s, holding the GIL."""
    match = _MARKDOWN_HEADING.match(line)
    if match is None:
        return None
    text = match.group(2).rstrip()
    return text.rstrip("#").rstrip() or text[:1] or match.group(2)[:1]


def split_markdown(text: str) -> list[Section]:
    sections: list[Section] = []
    title, in_fence = "(start)", False
    lines: list[str] = []
    has_text = False  # kept as lines come rather than re-scanned at each heading
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        heading = None if in_fence else _heading(line)
        if heading is not None and has_text:
            sections.append(Section(SectionKind.HEADING, title, clean_text("\n".join(lines))))
            lines, has_text = [], False
        if heading is not None:
            title = heading
        lines.append(line)
        has_text = has_text or bool(line.strip())
    if lines:
        sections.append(Section(SectionKind.HEADING, title, clean_text("\n".join(lines))))
    return sections


def _pieces(line: str) -> list[str]:
    """An over-long line in parts of about PART_CHARS, cut at a space when one is near
    (offsets, not repeated slicing of the rest: that would be quadratic in the line)."""
    pieces: list[str] = []
    start = 0
    while len(line) - start > PART_CHARS:
        cut = line.rfind(" ", start + PART_CHARS - 1000, start + PART_CHARS)
        cut = cut + 1 if cut > start else start + PART_CHARS
        pieces.append(line[start:cut])
        start = cut
    if start < len(line):
        pieces.append(line[start:])
    return pieces


def split_plain(text: str) -> list[Section]:
    """Parts of about PART_CHARS at blank lines, titled by line range for citation. A line too
    long for one part (a 50 MB one-line file) is cut into parts of its own, so every part can
    be chosen or left out and none is a single enormous block."""
    lines = text.split("\n")
    sections: list[Section] = []
    start, size = 0, 0

    def flush(end: int) -> None:
        if end > start:
            sections.append(Section(SectionKind.HEADING, f"lines {start + 1}-{end}",
                                    clean_text("\n".join(lines[start:end]))))

    for index, line in enumerate(lines):
        if len(line) > 4 * PART_CHARS:
            flush(index)
            for number, piece in enumerate(_pieces(line), 1):
                sections.append(Section(SectionKind.HEADING, f"line {index + 1} part {number}",
                                        clean_text(piece)))
            start, size = index + 1, 0
            continue
        size += len(line) + 1
        at_break = not line.strip() or index == len(lines) - 1
        if (size >= PART_CHARS and at_break) or size >= 4 * PART_CHARS or index == len(lines) - 1:
            flush(index + 1)
            start, size = index + 1, 0
    return sections


def text_sections(data: bytes, *, name: str) -> tuple[list[Section], list[str]]:
    text, warning = decode_text(data, name=name)
    text = clean_text(text)
    if not text.strip():
        raise UnsupportedFormatError(f"{name}: the file holds no text; pick a file with content.")
    is_markdown = name.lower().endswith((".md", ".markdown", ".mdx"))
    sections = split_markdown(text) if is_markdown else split_plain(text)
    if is_markdown and any(len(s.text) > 4 * PART_CHARS for s in sections):
        sections = _split_long_headings(sections)
    return sections, [warning] if warning else []


def _split_long_headings(sections: list[Section]) -> list[Section]:
    """A Markdown section too long for one part (one huge paragraph or line) is cut like
    plain text, so it can be chosen part by part and is never one enormous block."""
    out: list[Section] = []
    for section in sections:
        if len(section.text) <= 4 * PART_CHARS:
            out.append(section)
            continue
        out += [Section(SectionKind.HEADING, f"{section.title} ({part.title})", part.text)
                for part in split_plain(section.text)]
    return out
