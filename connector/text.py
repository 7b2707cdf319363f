"""Ticket text preparation: from what a helpdesk stores to what the model reads.

The classifier, the training script and the service all call
``prepare_ticket_text`` so that a model sees at serving time exactly the kind of
text it was trained on. The steps, in order:

1. decode bytes of unknown encoding (UTF-8 first, then charset-normalizer's best
   guess, then cp1252 with replacement: odd bytes never raise);
2. turn HTML into text with selectolax (lexbor): script/style and similar are
   dropped, block elements and ``<br>`` become line breaks, quoted blocks
   (``<blockquote>``, Gmail's ``gmail_quote``) are removed;
3. drop quoted replies: lines starting with ``>``, and everything from an
   attribution line ("On ... wrote:", "Am ... schrieb ...:"), an
   "-----Original Message-----" / "-----Ursprüngliche Nachricht-----" separator
   or an Outlook header block ("From:/Von:" followed by "Sent:/Gesendet:",
   "To:/An:", "Subject:/Betreff:" ...) to the end;
4. drop the signature after a ``-- `` line;
5. normalise Unicode (NFC) and whitespace;
6. cap the length in characters.

Size is bounded before any expensive step: raw input is cut to
``RAW_LIMIT_FACTOR * max_chars`` before decoding and HTML parsing, so a 10 MB
body costs no more than a few hundred kilobytes of work.

Confirmed against the installed selectolax 1.0 stubs (``selectolax/lexbor.pyi``):
``LexborHTMLParser``, ``strip_tags``, ``css``, ``decompose``, ``insert_before``/
``insert_after`` with a str (inserted as text) and ``text(deep=True)``; and the
charset-normalizer 3 API ``from_bytes(...).best()`` returning a match or None.
"""

from __future__ import annotations

import re
import unicodedata

from charset_normalizer import from_bytes
from selectolax.lexbor import LexborHTMLParser

MAX_CHARS = 4000
"""Characters kept per ticket. 256 tokens rarely need more than about 1,500."""

RAW_LIMIT_FACTOR = 64
"""Raw input kept before decoding/parsing, as a multiple of ``max_chars``.

HTML mail carries far more markup than text (inline styles, tables), so the cut
before parsing is generous; the final cut to ``max_chars`` happens on the text.
"""

SUBJECT_MAX_CHARS = 300
SUBJECT_BODY_SEPARATOR = "\n"

# Elements whose content is never text a customer wrote.
_DROPPED_TAGS = ["script", "style", "head", "title", "noscript", "template", "svg", "iframe"]
# Elements that start a new line when rendered.
_BLOCK_TAGS = (
    "p,div,br,li,ul,ol,tr,table,h1,h2,h3,h4,h5,h6,pre,hr,section,article,header,footer,"
    "blockquote,address,dd,dt,dl,td,th,caption,center,form,fieldset,nav,aside,main"
)
# Quoted history in HTML mail: generic blockquotes, Gmail, Thunderbird/Apple (type=cite),
# Outlook's reply header container.
_QUOTE_SELECTORS = (
    "blockquote, .gmail_quote, .gmail_extra, #divRplyFwdMsg, #appendonsend, .moz-cite-prefix"
)
# A character that cannot survive whitespace collapsing by accident; marks inserted breaks.
_BREAK = "\u2028"

_HTML_SNIFF = re.compile(
    r"<(?:html|body|div|p|br|span|table|td|tr|a|b|i|strong|em|ul|ol|li|h[1-6]|font|img|meta|"
    r"!doctype)(?:\s[^<>]*)?/?>",
    re.IGNORECASE,
)
_BREAKS = re.compile(f"(?: ?{_BREAK} ?)+")
_HTML_WHITESPACE = re.compile(r"[ \t\n\r\f\v]+")  # not \s: it would match the break marker
_SUBJECT_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|wg|fw|fwd|sv|vs|antw|tr|rif|r)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE
)
# "On Tue, 4 Jun 2024 at 10:12, Jane <jane@example.com> wrote:" (may wrap onto a second line)
_ATTRIBUTION_EN = re.compile(r"^\s*On\b.{0,300}\bwrote\s*:\s*$", re.IGNORECASE | re.DOTALL)
# "Am 04.06.2024 um 10:12 schrieb Jane Doe <jane@example.com>:"
_ATTRIBUTION_DE = re.compile(r"^\s*Am\b.{0,300}\bschrieb\b.{0,200}:\s*$", re.IGNORECASE | re.DOTALL)
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{2,}\s*(?:original message|ursprüngliche nachricht|forwarded message|"
    r"weitergeleitete nachricht)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_HEADER_FROM = re.compile(r"^\s*\*?(?:from|von)\s*:\*?\s*\S", re.IGNORECASE)
_HEADER_OTHER = re.compile(
    r"^\s*\*?(?:sent|date|to|cc|subject|gesendet|datum|an|betreff|cc)\s*:\*?", re.IGNORECASE
)
# Code pages charset-normalizer names for Latin-script text (Python codec names).
_LATIN_SINGLE_BYTE = frozenset(
    {
        "cp1250", "cp1252", "cp1254", "cp1257", "cp1258", "latin_1", "iso8859_2", "iso8859_3",
        "iso8859_4", "iso8859_9", "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_15",
        "iso8859_16", "cp437", "cp850", "cp852", "cp857", "cp858", "cp775", "cp860", "cp861",
        "cp863", "cp865", "hp_roman8", "mac_roman", "mac_latin2", "mac_iceland", "mac_turkish",
    }
)  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")
_HORIZONTAL_SPACE = re.compile(r"[ \t\xa0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")


def decode(data: bytes | str | None, *, charset: str | None = None) -> str:
    """Text from bytes of unknown (or declared) encoding; never raises on odd bytes.

    A declared ``charset`` (from a Content-Type) is tried first, then strict
    UTF-8 (by far the most common, and cheap to confirm), then
    charset-normalizer's best guess, then cp1252 with replacement characters.
    A guess of any Latin-script single-byte code page is read as cp1252.
    """
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    if not data:
        return ""
    if charset:
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass  # a wrong declaration is common; fall through to detection
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        # Input cut at a byte limit may end inside a multi-byte character.
        if error.reason == "unexpected end of data" and error.start >= len(data) - 3:
            try:
                return data[: error.start].decode("utf-8-sig")
            except UnicodeDecodeError:
                pass
    best = from_bytes(data).best()
    if best is None:
        return data.decode("cp1252", errors="replace")
    if best.encoding in _LATIN_SINGLE_BYTE:
        # Detection cannot tell the Latin code pages apart on short text (it picks
        # cp1250 or cp852 for Portuguese); mail in any of them is nearly always cp1252.
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            pass  # one of cp1252's five unassigned bytes: trust the detector
    return str(best)


def charset_of(content_type: str | None) -> str | None:
    """The ``charset`` parameter of a Content-Type header, if any."""
    if not content_type:
        return None
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip("\"'")
    return None


def looks_like_html(text: str) -> bool:
    """True when ``text`` contains common HTML tags (for bodies without a content type)."""
    return _HTML_SNIFF.search(text[:20_000]) is not None


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment or document, with block elements on their own lines.

    Scripts, styles and similar are dropped, and so are quoted-history
    containers (blockquote, Gmail and Outlook reply wrappers). Entities are
    decoded by the parser. Whitespace inside text runs is collapsed as a browser
    would; line structure comes only from the markup.
    """
    if not html.strip():
        return ""
    tree = LexborHTMLParser(html)
    tree.strip_tags(_DROPPED_TAGS, recursive=True)
    root = tree.body if tree.body is not None else tree.root
    if root is None:
        return ""
    for quoted in root.css(_QUOTE_SELECTORS):
        quoted.decompose()
    for block in root.css(_BLOCK_TAGS):
        block.insert_before(_BREAK)
        block.insert_after(_BREAK)
    text = root.text(deep=True)
    text = _HTML_WHITESPACE.sub(" ", text)
    # Adjacent blocks leave several markers in a row: one line break is enough.
    return _BREAKS.sub("\n", text).strip()


def strip_quoted_reply(text: str) -> str:
    """The text without quoted history: ``>`` lines, and everything after a reply header.

    A reply header is an attribution line ("On ... wrote:", "Am ... schrieb
    ...:", possibly wrapped over two lines), an "Original Message" style
    separator, or an Outlook header block (a From:/Von: line followed directly
    by another header such as Sent:/Gesendet: or To:/An:). When stripping would
    leave nothing (a bare forward), the text is kept minus its ``>`` markers, so
    the classifier still has something to read.
    """
    lines = text.split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        if _starts_quoted_history(lines, index):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    result = "\n".join(kept)
    if result.strip():
        return result
    return "\n".join(line.lstrip().lstrip(">").lstrip() for line in lines)


def _starts_quoted_history(lines: list[str], index: int) -> bool:
    line = lines[index]
    if _ORIGINAL_MESSAGE.match(line):
        return True
    stripped = line.strip()
    if stripped.lower().startswith(("on ", "am ")):
        if _ATTRIBUTION_EN.match(stripped) or _ATTRIBUTION_DE.match(stripped):
            return True
        # Mail clients wrap long attribution lines: "On ..., Jane <" / "jane@x> wrote:".
        if index + 1 < len(lines):
            joined = stripped + " " + lines[index + 1].strip()
            if _ATTRIBUTION_EN.match(joined) or _ATTRIBUTION_DE.match(joined):
                return True
    if _HEADER_FROM.match(line):
        following = [candidate for candidate in lines[index + 1 : index + 4] if candidate.strip()]
        return bool(following) and _HEADER_OTHER.match(following[0]) is not None
    return False


def strip_signature(text: str) -> str:
    """The text before the signature delimiter (a line that is ``-- ``, or ``--``).

    A delimiter on the first non-empty line is ignored: there is no message
    before it to keep.
    """
    lines = text.split("\n")
    seen_content = False
    for index, line in enumerate(lines):
        if line.rstrip("\r") in ("-- ", "--") and seen_content:
            return "\n".join(lines[:index])
        if line.strip():
            seen_content = True
    return text


def normalize(text: str) -> str:
    """NFC, no control or zero-width characters, single spaces, at most one blank line."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _HORIZONTAL_SPACE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _MANY_BLANK_LINES.sub("\n\n", text)
    return text.strip()


def truncate(text: str, max_chars: int) -> str:
    """At most ``max_chars`` characters, cut at a word boundary when one is near the end."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    boundary = cut.rfind(" ", max(0, max_chars - 50))
    return cut[:boundary].rstrip() if boundary > 0 else cut


def clean_body(
    body: str | bytes | None,
    content_type: str | None = None,
    *,
    max_chars: int = MAX_CHARS,
) -> str:
    """The customer's own words from an article body as the helpdesk stores it.

    ``content_type`` such as ``text/html; charset=iso-8859-1``; when None,
    HTML is recognised by its tags.
    """
    if body is None:
        return ""
    raw_limit = max_chars * RAW_LIMIT_FACTOR
    text = decode(body[:raw_limit], charset=charset_of(content_type))[:raw_limit]
    media_type = (content_type or "").split(";")[0].strip().lower()
    is_html = media_type in ("text/html", "application/xhtml+xml") or (
        not media_type and looks_like_html(text)
    )
    if is_html:
        text = html_to_text(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = strip_signature(strip_quoted_reply(text))
    return truncate(normalize(text), max_chars)


def clean_subject(subject: str | bytes | None, *, max_chars: int = SUBJECT_MAX_CHARS) -> str:
    """The subject on one line, without reply/forward prefixes (Re:, AW:, Fwd:, WG: ...)."""
    if subject is None:
        return ""
    text = decode(subject[: max_chars * 4])
    text = normalize(text.replace("\n", " "))
    text = _SUBJECT_PREFIX.sub("", text)
    return truncate(text.strip(), max_chars)


def prepare_ticket_text(
    subject: str | bytes | None,
    body: str | bytes | None,
    content_type: str | None = None,
    *,
    max_chars: int = MAX_CHARS,
    separator: str = SUBJECT_BODY_SEPARATOR,
) -> str:
    """Subject and cleaned body joined by ``separator``: the exact text the model reads."""
    parts = [clean_subject(subject), clean_body(body, content_type, max_chars=max_chars)]
    return truncate(separator.join(part for part in parts if part), max_chars)


__all__ = [
    "MAX_CHARS",
    "SUBJECT_BODY_SEPARATOR",
    "charset_of",
    "clean_body",
    "clean_subject",
    "decode",
    "html_to_text",
    "looks_like_html",
    "normalize",
    "prepare_ticket_text",
    "strip_quoted_reply",
    "strip_signature",
    "truncate",
]
