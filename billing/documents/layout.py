"""The one page layout of every document we issue (receipts, credit notes, statements): the issuer's header,
the recipient and the document's facts side by side, tables, a totals block, notes, and a footer with the
document number and "page x of y" on every page. Content comes in as plain data (`Content`); nothing here
reads the database, so a renderer is a pure function from `Content` to PDF bytes."""

from __future__ import annotations

import io
import itertools
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone
from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as pdfcanvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    KeepTogether,
    LongTable,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus.doctemplate import LayoutError

from billing.money import DEFAULT_POLICY, minor_units, round_money

# Streams (pages, the embedded font subsets) go out as binary, not ASCII85-encoded: smaller files and less
# CPU per document (reportlab's default dates from 7-bit mail transport; every PDF reader reads binary).
rl_config.useA85 = 0

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 18 * mm
FOOTER_HEIGHT = 14 * mm
CONTENT_WIDTH = PAGE_WIDTH - 2 * MARGIN

INK = colors.HexColor("#1f2933")
MUTED = colors.HexColor("#616e7c")
RULE = colors.HexColor("#9aa5b1")
SHADE = colors.HexColor("#e4e7eb")
ACCENT = colors.HexColor("#0b4f6c")


# --- fonts: the PDF standard Helvetica when every character fits its encoding; else an embedded TrueType face
# with more than Latin-1 (drivers' and partners' names), Vera as the fallback -----------------------------------

_FONT_CANDIDATES = (
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    ("Vera.ttf", "VeraBd.ttf"),  # shipped with reportlab, so this one always loads
)
_fonts: tuple[str, str] | None = None
# One of the 14 fonts every PDF reader has: nothing embedded. Its encoding (WinAnsi, Windows-1252) covers
# Western European text, the dashes and the euro sign; a receipt set in it is 3 kB instead of 45 kB (two
# embedded subsets) and renders in 4.1 ms instead of 6.9 (docs/benchmarks.md, issue 15 point 8).
STANDARD_FONTS = ("Helvetica", "Helvetica-Bold")


def fonts() -> tuple[str, str]:
    """The embedded (regular, bold) font names, registered with reportlab on first use."""
    global _fonts
    if _fonts is None:
        for regular, bold in _FONT_CANDIDATES:
            if regular.startswith("/") and not (Path(regular).exists() and Path(bold).exists()):
                continue
            pdfmetrics.registerFont(TTFont("DocSans", regular))
            pdfmetrics.registerFont(TTFont("DocSans-Bold", bold))
            pdfmetrics.registerFontFamily("DocSans", normal="DocSans", bold="DocSans-Bold")
            _fonts = ("DocSans", "DocSans-Bold")
            break
        else:  # pragma: no cover - reportlab without its Vera fonts
            _fonts = ("Helvetica", "Helvetica-Bold")
    return _fonts


# Scripts the embedded face has no glyphs for, each set in a Noto face of its own where the machine has one
# (Debian's fonts-noto-core; `make install` and the Dockerfile install it) and shaped by HarfBuzz (uharfbuzz): in
# these scripts letters join and reorder, and drawn one code point at a time they would be misspelt. Without the
# font a run prints as the embedded face's boxes, as before. The Indian scripts first: names and addresses of
# drivers and sites in India are written in them.
SCRIPT_FONT_DIRS = ("/usr/share/fonts/truetype/noto", "/usr/share/fonts/noto")
SCRIPTS = (  # (first, last code point, Noto face)
    (0x0900, 0x097F, "NotoSansDevanagari"),  # Hindi, Marathi, Nepali
    (0x0980, 0x09FF, "NotoSansBengali"),  # Bengali, Assamese
    (0x0A00, 0x0A7F, "NotoSansGurmukhi"),  # Punjabi
    (0x0A80, 0x0AFF, "NotoSansGujarati"),
    (0x0B00, 0x0B7F, "NotoSansOriya"),
    (0x0B80, 0x0BFF, "NotoSansTamil"),
    (0x0C00, 0x0C7F, "NotoSansTelugu"),
    (0x0C80, 0x0CFF, "NotoSansKannada"),
    (0x0D00, 0x0D7F, "NotoSansMalayalam"),
    (0x0D80, 0x0DFF, "NotoSansSinhala"),
    (0x0E00, 0x0E7F, "NotoSansThai"),
)
_script_faces: dict[str, str | None] = {}  # Noto face -> the reportlab family registered for it (None: no font)
_covers: dict[str, frozenset[int]] = {}  # family -> the code points its regular font has glyphs for


# The danda and double danda: coded in the Devanagari block, written by most Indian scripts (Unicode gives them
# to the Common script, extended to these). They take the face of the script they follow, so a Bengali sentence's
# full stop is not set in Devanagari (two faces meeting put a space before it).
DANDAS = frozenset("\u0964\u0965")
DANDA_FACE = "NotoSansDevanagari"  # a danda with no script before it


def _script_of(char: str) -> str | None:
    code = ord(char)
    if code < 0x0900 or code > 0x0E7F or char in DANDAS:
        return None
    for first, last, face in SCRIPTS:
        if first <= code <= last:
            return face
    return None


def script_family(face: str) -> str | None:
    """The reportlab font family for a Noto face (its regular and, where installed, bold), registered on first
    use; None when the machine has no such font."""
    if face not in _script_faces:
        family = None
        for folder in SCRIPT_FONT_DIRS:
            regular = Path(folder) / f"{face}-Regular.ttf"
            if regular.exists():
                bold = Path(folder) / f"{face}-Bold.ttf"
                family = f"Doc{face.removeprefix('NotoSans')}"
                font = TTFont(family, str(regular))
                pdfmetrics.registerFont(font)
                pdfmetrics.registerFont(TTFont(f"{family}-Bold", str(bold if bold.exists() else regular)))
                pdfmetrics.registerFontFamily(family, normal=family, bold=f"{family}-Bold")
                _covers[family] = frozenset(font.face.charToGlyph)
                break
        _script_faces[face] = family
    return _script_faces[face]


def script_runs(text: str) -> list[tuple[str, str | None]]:
    """The text cut into runs, each with the Noto face it is set in (None: the document's own face). A word
    with letters of a script is set wholly in that script's face where the face has all of its characters
    (Noto's script faces carry the digits and punctuation): drawn as two faces within one word, the
    punctuation after a shaped run is displaced (reportlab 5.1). Spaces between two runs of one face join them."""
    pieces: list[tuple[str, str | None]] = []
    for token in re.split(r"( +)", text):
        if not token:
            continue
        faces = {_script_of(c) for c in token} - {None}
        face = faces.pop() if len(faces) == 1 else None
        family = script_family(face) if face else None
        if family and all(ord(c) in _covers[family] for c in token):
            pieces.append((token, face))
        else:  # character by character; punctuation stays with the script before it where its face has it
            for c in token:
                face = _script_of(c)
                if c in DANDAS:
                    pieces.append((c, _danda_face(pieces)))
                    continue
                before = pieces[-1][1] if pieces else None
                if (
                    face is None
                    and before
                    and not (c.isalnum() or c.isspace())
                    and ord(c) in _covers.get(script_family(before) or "", ())
                ):
                    face = before
                pieces.append((c, face))
    runs: list[tuple[str, str | None]] = []
    for i, (piece, face) in enumerate(pieces):
        between = piece.isspace() and 0 < i < len(pieces) - 1 and runs and runs[-1][1] is not None
        if between and pieces[i + 1][1] == runs[-1][1]:
            face = runs[-1][1]  # a space between two runs of one face
        if runs and runs[-1][1] == face:
            runs[-1] = (runs[-1][0] + piece, face)
        else:
            runs.append((piece, face))
    return runs


def _danda_face(pieces: list[tuple[str, str | None]]) -> str | None:
    """The face for a danda: the last script's before it (across spaces: "है ।"), where it has the glyph."""
    for _piece, face in reversed(pieces):
        if face is not None:
            family = script_family(face)
            if family and all(ord(d) in _covers[family] for d in DANDAS):
                return face
            break
    return DANDA_FACE


def needs_script_fonts(text: str) -> bool:
    """Has the text a word to set in a script's own face (one installed here)?"""
    if not DANDAS.isdisjoint(text) and script_family(DANDA_FACE):
        return True
    return any(face and script_family(face) for face in map(_script_of, text))


def _marked(text: str, bold: bool = False) -> str:
    """The text as Paragraph markup: escaped, each run of a script with a font of its own in that font (its
    bold in a bold style). Two fonts never meet inside a word: reportlab 5.1 shapes a word with the font of its
    first run and looks the glyphs up in the font of each run, so a word of two fonts ("चेन्नई-சென்னை", "aकb")
    failed the document (AttributeError hbAddPrivate) or printed boxes in it. Where runs of two fonts touch with
    no space between them, a space is put between them."""
    parts = []
    before: tuple[str | None, str] | None = None  # the font of the run before and its last character
    for run, face in script_runs(text):
        family = script_family(face) if face else None
        if before and before[0] != family and not (_word_break(before[1]) or _word_break(run[0])):
            parts.append(" ")
        before = (family, run[-1])
        if family and bold:
            family += "-Bold"
        parts.append(f'<font face="{family}">{escape(run)}</font>' if family else escape(run))
    return "".join(parts)


def _word_break(char: str) -> bool:
    """Does reportlab end a word at this character? At whitespace but the no-break space."""
    return char.isspace() and char != "\xa0"


def _standard_text(text: str) -> bool:
    """Can the standard fonts print this? Printable characters of Windows-1252 only (line breaks become <br/>);
    a control character or a script beyond it sends the document to the embedded face, which has a glyph or
    at least its "missing" box for everything."""
    try:
        text.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return text.replace("\n", "").isprintable()


def _texts(content: Content, issuer: Issuer) -> list[str]:
    """Every text the document prints."""
    texts = [issuer.name, issuer.address, issuer.tax_id, content.title, content.subtitle, content.number,
             content.recipient_label, *content.recipient, *content.notes]  # fmt: skip
    texts += [part for pair in (*content.facts, *content.totals) for part in pair]
    for section in content.sections:
        texts += [section.title, section.note, *(c.title for c in section.columns)]
        texts += [cell for row in (*section.rows, *section.total_rows) for cell in row]
    return texts


def fonts_for(content: Content, issuer: Issuer) -> tuple[str, str]:
    """The document's (regular, bold) fonts: the standard ones when all of its text fits them, else the
    embedded ones; one pair for the whole document, so its pages look alike."""
    return STANDARD_FONTS if all(_standard_text(t) for t in _texts(content, issuer)) else fonts()


# --- content ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issuer:
    """The legal entity that issues the document (settings.LEGAL_ENTITY_*)."""

    name: str
    address: str
    tax_id: str


@dataclass(frozen=True)
class Column:
    title: str
    width: float  # share of the content width; the shares of a table add up to 1
    align: str = "L"  # L or R (amounts and quantities are R)


@dataclass(frozen=True)
class Section:
    """A titled table. `rows` are text already formatted; `total_rows` are set in bold under a rule."""

    title: str
    columns: list[Column]
    rows: list[list[str]]
    total_rows: list[list[str]] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class Content:
    title: str  # "Receipt", "Credit note", "Settlement statement"
    subtitle: str  # one line under the title, e.g. "Consumer app (BAP)"
    number: str
    issued_at: datetime
    recipient_label: str  # "Issued to", "Statement for"
    recipient: list[str]  # first line in bold
    facts: list[tuple[str, str]]  # label, value: beside the recipient
    sections: list[Section]
    totals: list[tuple[str, str]] = field(default_factory=list)  # the last one is the grand total
    notes: list[str] = field(default_factory=list)
    # The totals follow this many sections (all of them when None): a statement states what is due before
    # its long list of lines, so the figure that matters is on the first page.
    totals_after: int | None = None


# --- formatting ---------------------------------------------------------------------------------------------


def rounded(amount: Decimal, currency: str, policy: str = DEFAULT_POLICY) -> Decimal:
    """The amount rounded to the currency's minor unit with the policy; exact for a currency outside ISO 4217
    (shown as given rather than guessed)."""
    try:
        return round_money(amount, currency, policy)
    except ValueError:
        return amount


def money(amount: Decimal | None, currency: str, policy: str = DEFAULT_POLICY) -> str:
    """`1,234.50` for INR, `1,235` for JPY, `1.235` for KWD: rounded to the currency's minor unit with the
    policy, grouped by thousands, a minus sign for credits. Decimal all the way; no float."""
    if amount is None:
        return "–"
    value = rounded(amount, currency, policy)
    try:
        places = minor_units(currency)
    except ValueError:
        places = max(0, -int(value.as_tuple().exponent))
    text = f"{abs(value):,.{places}f}"
    return f"-{text}" if value < 0 else text


def quantity(value: Decimal | None, places: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value.quantize(Decimal(1).scaleb(-places)):,.{places}f}"


def document_zone() -> ZoneInfo:
    """The legal entity's time zone (settings.DOCUMENTS_TIME_ZONE, checked at startup): documents print their
    dates and times in it, and are numbered in the year of issue in it (billing/services/documents.py), not in
    the deployment's TIME_ZONE."""
    return ZoneInfo(settings.DOCUMENTS_TIME_ZONE)


def moment(value: datetime | None, *, zone: bool = True) -> str:
    """Local time of the legal entity (document_zone), to the minute, with the zone's name (in a table the
    column title names the zone instead)."""
    if value is None:
        return "–"
    local = timezone.localtime(value, document_zone())
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}" if zone else f"{local:%Y-%m-%d %H:%M}"


def day(value: Any) -> str:
    """A date, or an aware datetime's date in the legal entity's time zone (document_zone)."""
    if value is None:
        return "–"
    if isinstance(value, datetime):
        value = timezone.localtime(value, document_zone())
    return f"{value:%Y-%m-%d}"


# Text a partner sent (a CPO's location name and address, a partner's name from its credentials) is printed in
# table cells, and a table row can't be split across pages: a name of eighty line breaks, or thousands of
# characters, made a row taller than the page and the document impossible to render (reportlab's LayoutError).
CELL_MAX = 300
# The fallback when a document still doesn't fit: every table cell on at most about three lines.
CELL_MAX_RETRY = 120


def plain(text: object, cap: int = CELL_MAX) -> str:
    """Text from outside as one line for a cell: runs of whitespace (line breaks, tabs) become one space, and
    at most `cap` characters are kept, an ellipsis marking the cut."""
    line = " ".join(str(text).split())
    return line if len(line) <= cap else line[: cap - 1].rstrip() + "…"


def _shortened(content: Content) -> Content:
    """The content with every table cell, fact and recipient line made plain and short (CELL_MAX_RETRY)."""

    def short(text: str) -> str:
        return plain(text, CELL_MAX_RETRY) if text else text

    sections = [
        replace(
            section,
            rows=[[short(cell) for cell in row] for row in section.rows],
            total_rows=[[short(cell) for cell in row] for row in section.total_rows],
        )
        for section in content.sections
    ]
    return replace(
        content,
        recipient=[short(line) for line in content.recipient],
        facts=[(short(label), short(value)) for label, value in content.facts],
        totals=[(short(label), short(value)) for label, value in content.totals],
        sections=sections,
    )


# --- rendering ----------------------------------------------------------------------------------------------


def _styles(regular: str, bold: str, shaping: bool = False) -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("base", fontName=regular, fontSize=8.5, leading=11, textColor=INK, shaping=int(shaping))
    return {
        "base": base,
        "right": ParagraphStyle("right", parent=base, alignment=TA_RIGHT),
        "bold": ParagraphStyle("bold", parent=base, fontName=bold),
        "bold_right": ParagraphStyle("bold_right", parent=base, fontName=bold, alignment=TA_RIGHT),
        "issuer": ParagraphStyle("issuer", parent=base, fontName=bold, fontSize=13, leading=16, textColor=ACCENT),
        "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5, textColor=MUTED),
        "title": ParagraphStyle(
            "title", parent=base, fontName=bold, fontSize=18, leading=22, alignment=TA_RIGHT, textColor=ACCENT
        ),
        "subtitle": ParagraphStyle("subtitle", parent=base, alignment=TA_RIGHT, textColor=MUTED),
        "label": ParagraphStyle("label", parent=base, fontSize=7.5, leading=10, textColor=MUTED),
        "section": ParagraphStyle(
            "section", parent=base, fontName=bold, fontSize=10, leading=13, spaceBefore=4, textColor=ACCENT
        ),
        "head": ParagraphStyle("head", parent=base, fontName=bold, fontSize=8, leading=10),
        "head_right": ParagraphStyle(
            "head_right", parent=base, fontName=bold, fontSize=8, leading=10, alignment=TA_RIGHT
        ),
        "total_label": ParagraphStyle("total_label", parent=base, alignment=TA_RIGHT),
        "grand": ParagraphStyle("grand", parent=base, fontName=bold, fontSize=10, leading=13, alignment=TA_RIGHT),
    }


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    indent = len(text) - len(text.lstrip(" "))  # leading spaces indent a sub-item ("  of which …")
    body = _marked(text.lstrip(" "), style.fontName.endswith("-Bold")) if style.shaping else escape(text.lstrip(" "))
    return Paragraph("&nbsp;" * 2 * indent + body.replace("\n", "<br/>"), style)


def _cell(text: str, style: ParagraphStyle, width: float) -> str | Paragraph:
    """A table cell: the text as a plain string when it fits on one line of `width` points (the table draws it
    with the font its style commands give: no markup parsed, no lines broken, about a third of a Paragraph's
    cost), else a Paragraph in `style` that wraps. An indented sub-item ("  of which …") stays a Paragraph, and
    so does text in a script set in a font of its own."""
    if (
        "\n" in text
        or text.startswith(" ")
        or stringWidth(text, style.fontName, style.fontSize) > width
        or (style.shaping and needs_script_fonts(text))
    ):
        return _p(text, style)
    return text


def _string_style(style: ParagraphStyle, first: tuple[int, int], last: tuple[int, int]) -> list[tuple[Any, ...]]:
    """Table style commands that draw the string cells of a range as `style` would."""
    return [
        ("FONT", first, last, style.fontName, style.fontSize, style.leading),
        ("TEXTCOLOR", first, last, style.textColor),
        ("ALIGN", first, last, "RIGHT" if style.alignment == TA_RIGHT else "LEFT"),
    ]


def _header(issuer: Issuer, content: Content, s: dict[str, ParagraphStyle]) -> list[Flowable]:
    left = [
        _p(issuer.name, s["issuer"]),
        _p(issuer.address, s["base"]),
        _p(f"Tax ID: {issuer.tax_id}", s["base"]),
    ]
    right = [
        _p(content.title, s["title"]),
        _p(content.subtitle, s["subtitle"]),
        _p(f"No. {content.number}", s["bold_right"]),
        _p(f"Issued {moment(content.issued_at)}", s["right"]),
    ]
    head = Table([[left, right]], colWidths=[CONTENT_WIDTH * 0.55, CONTENT_WIDTH * 0.45])
    head.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                ("LINEBELOW", (0, 0), (-1, 0), 1.2, ACCENT),
                ("BOTTOMPADDING", (0, 0), (-1, 0), 8),
            ]
        )
    )
    recipient = [_p(content.recipient_label.upper(), s["label"])]
    for i, line in enumerate(content.recipient):
        recipient.append(_p(line, s["bold"] if i == 0 else s["base"]))
    widths = [CONTENT_WIDTH * 0.17, CONTENT_WIDTH * 0.31]
    facts = Table(
        [
            # Less the cell's right padding (reportlab's default of 6; the left one is 0 here).
            [_cell(label, s["label"], widths[0] - 6), _cell(value, s["base"], widths[1] - 6)]
            for label, value in content.facts
        ],
        colWidths=widths,
    )
    facts.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                *_string_style(s["label"], (0, 0), (0, -1)),
                *_string_style(s["base"], (1, 0), (1, -1)),
            ]
        )
    )
    parties = Table([[recipient, facts]], colWidths=[CONTENT_WIDTH * 0.52, CONTENT_WIDTH * 0.48])
    parties.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 10),
            ]
        )
    )
    return [head, parties, Spacer(1, 6 * mm)]


def _section(section: Section, s: dict[str, ParagraphStyle]) -> list[Flowable]:
    widths = [CONTENT_WIDTH * c.width for c in section.columns]

    def cells(row: list[str], plain: str, right: str) -> list[str | Paragraph]:
        return [
            _cell(text, s[right if column.align == "R" else plain], width - 8)  # less the cell's padding
            for column, text, width in zip(section.columns, row, widths, strict=True)
        ]

    has_head = any(c.title for c in section.columns)  # a key/value table has no column titles
    # The table's row groups with their styles (left-aligned, right-aligned): each group's cells are built in
    # those styles, and its string cells drawn in them.
    groups = [([c.title for c in section.columns], "head", "head_right")] if has_head else []
    groups += [(row, "base", "right") for row in section.rows]
    groups += [(row, "bold", "bold_right") for row in section.total_rows]
    data = [cells(row, plain, right) for row, plain, right in groups]
    table = LongTable(data, colWidths=widths, repeatRows=int(has_head))
    first = int(has_head)
    body_end = first + len(section.rows) - 1  # index of the last body row
    style: list[tuple[Any, ...]] = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 2.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
        ("LEFTPADDING", (0, 0), (-1, -1), 4),
        ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]
    top = 0
    for (plain, right), run in itertools.groupby(groups, key=lambda group: group[1:]):  # one command per run
        bottom = top + len(list(run)) - 1
        for i, column in enumerate(section.columns):
            style += _string_style(s[right if column.align == "R" else plain], (i, top), (i, bottom))
        top = bottom + 1
    if has_head:
        style += [("BACKGROUND", (0, 0), (-1, 0), SHADE), ("LINEBELOW", (0, 0), (-1, 0), 0.6, RULE)]
    else:
        style.append(("LINEABOVE", (0, 0), (-1, 0), 0.6, RULE))
    for i in range(first + 1, body_end + 1, 2):  # zebra stripes help a reader follow a long row across
        style.append(("BACKGROUND", (0, i), (-1, i), colors.HexColor("#f5f7fa")))
    if section.total_rows:
        style.append(("LINEABOVE", (0, body_end + 1), (-1, body_end + 1), 0.8, INK))
    else:
        style.append(("LINEBELOW", (0, -1), (-1, -1), 0.6, RULE))
    table.setStyle(TableStyle(style))
    out: list[Flowable] = [KeepTogether([_p(section.title, s["section"]), Spacer(1, 2 * mm), table])]
    if len(section.rows) > 40:  # a long table may break across pages; only its heading keeps with its start
        out = [_p(section.title, s["section"]), Spacer(1, 2 * mm), table]
    if section.note:
        out += [Spacer(1, 1.5 * mm), _p(section.note, s["small"])]
    out.append(Spacer(1, 5 * mm))
    return out


def _totals(totals: list[tuple[str, str]], s: dict[str, ParagraphStyle]) -> list[Flowable]:
    if not totals:
        return []
    widths = [CONTENT_WIDTH * 0.58, CONTENT_WIDTH * 0.2]
    # A cell's text has its width less the paddings: reportlab's default left 6 and the right 4 set below.
    rows = [
        [_cell(label, s["total_label"], widths[0] - 10), _cell(value, s["right"], widths[1] - 10)]
        for label, value in totals[:-1]
    ]
    label, value = totals[-1]
    rows.append([_cell(label, s["grand"], widths[0] - 10), _cell(value, s["grand"], widths[1] - 10)])
    table = Table(rows, colWidths=widths, hAlign="RIGHT")
    table.setStyle(
        TableStyle(
            [
                *_string_style(s["total_label"], (0, 0), (0, -2)),
                *_string_style(s["right"], (1, 0), (1, -2)),
                *_string_style(s["grand"], (0, -1), (-1, -1)),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
                ("RIGHTPADDING", (0, 0), (-1, -1), 4),
                ("LINEABOVE", (0, -1), (-1, -1), 1.2, INK),
                ("TOPPADDING", (0, -1), (-1, -1), 5),
                ("BACKGROUND", (0, -1), (-1, -1), SHADE),
                ("BOTTOMPADDING", (0, -1), (-1, -1), 5),
            ]
        )
    )
    return [KeepTogether([table]), Spacer(1, 6 * mm)]


class _NumberedCanvas(pdfcanvas.Canvas):
    """A canvas that holds every page until the end, so each footer can say "page x of y"."""

    footer_text = ""
    running_head = ""
    font_pair = STANDARD_FONTS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pages: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for state in self._pages:
            self.__dict__.update(state)
            self._decorate(total)
            super().showPage()
        super().save()

    def _decorate(self, total: int) -> None:
        regular, bold = self.font_pair
        page = self._pageNumber
        self.saveState()
        self.setStrokeColor(RULE)
        self.setLineWidth(0.5)
        self.line(MARGIN, FOOTER_HEIGHT, PAGE_WIDTH - MARGIN, FOOTER_HEIGHT)
        self.setFillColor(MUTED)
        self.setFont(regular, 7.5)
        self.drawString(MARGIN, FOOTER_HEIGHT - 4 * mm, self.footer_text)
        self.setFont(bold, 7.5)
        self.drawRightString(PAGE_WIDTH - MARGIN, FOOTER_HEIGHT - 4 * mm, f"Page {page} of {total}")
        if page > 1:  # later pages say whose document they continue
            self.setFont(regular, 7.5)
            self.drawString(MARGIN, PAGE_HEIGHT - MARGIN + 5 * mm, self.running_head)
            self.line(MARGIN, PAGE_HEIGHT - MARGIN + 3.5 * mm, PAGE_WIDTH - MARGIN, PAGE_HEIGHT - MARGIN + 3.5 * mm)
        self.restoreState()


def render(content: Content, issuer: Issuer) -> bytes:
    """The document as PDF bytes (A4). A row taller than a page can't be drawn (reportlab's LayoutError): the
    document is then rendered again with its cells shortened (_shortened), so it is issued all the same; should
    that fail too, the LayoutError goes to the caller."""
    try:
        return _render(content, issuer)
    except LayoutError:
        return _render(_shortened(content), issuer)


def _render(content: Content, issuer: Issuer) -> bytes:
    font_pair = fonts_for(content, issuer)
    styles = _styles(
        *font_pair, shaping=font_pair != STANDARD_FONTS and any(map(needs_script_fonts, _texts(content, issuer)))
    )
    story: list[Flowable] = _header(issuer, content, styles)
    after = len(content.sections) if content.totals_after is None else content.totals_after
    for section in content.sections[:after]:
        story += _section(section, styles)
    story += _totals(content.totals, styles)
    for section in content.sections[after:]:
        story += _section(section, styles)
    for note in content.notes:
        story += [_p(note, styles["small"]), Spacer(1, 1.5 * mm)]

    buffer = io.BytesIO()
    doc = BaseDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=FOOTER_HEIGHT + 6 * mm,
        title=f"{content.title} {content.number}",
        author=issuer.name,
        subject=content.subtitle,
        creator="eMSP billing",
    )
    frame = Frame(doc.leftMargin, doc.bottomMargin, doc.width, doc.height, id="body", leftPadding=0, rightPadding=0)
    doc.addPageTemplates([PageTemplate(id="page", frames=[frame])])

    footer = f"{issuer.name} · Tax ID {issuer.tax_id} · {content.title} {content.number}"
    running = f"{issuer.name} — {content.title} {content.number} (continued)"
    canvas_class = type(
        "DocumentCanvas", (_NumberedCanvas,), {"footer_text": footer, "running_head": running, "font_pair": font_pair}
    )
    doc.build(story, canvasmaker=canvas_class)
    return buffer.getvalue()


__all__ = [
    "Column",
    "Content",
    "Issuer",
    "LayoutError",
    "Section",
    "day",
    "document_zone",
    "moment",
    "money",
    "plain",
    "quantity",
    "render",
]
