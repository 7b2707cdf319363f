"""Ticket text preparation: decoding, HTML, quoted replies, signatures, limits."""

from __future__ import annotations

import pytest

from connector.text import (
    MAX_CHARS,
    charset_of,
    clean_body,
    clean_subject,
    decode,
    html_to_text,
    looks_like_html,
    normalize,
    prepare_ticket_text,
    strip_quoted_reply,
    strip_signature,
    truncate,
)

GERMAN = "Grüße aus Köln – die Rechnung für März ist „falsch“, bitte prüfen Sie das."  # noqa: RUF001


class TestDecode:
    @pytest.mark.parametrize("encoding", ["utf-8", "cp1252", "utf-8-sig"])
    def test_common_encodings_round_trip(self, encoding: str) -> None:
        assert decode(GERMAN.encode(encoding)) == GERMAN

    def test_latin1(self) -> None:
        text = "Hola, ¿por qué mi cuenta está bloqueada? Gracias, José. Ça ne marche pas."
        assert decode(text.encode("latin-1")) == text

    def test_declared_charset_wins(self) -> None:
        assert decode("für".encode("latin-1"), charset="iso-8859-1") == "für"

    def test_wrong_declared_charset_falls_back(self) -> None:
        assert decode(GERMAN.encode("utf-8"), charset="no-such-charset") == GERMAN

    def test_utf8_cut_inside_a_character_drops_the_fragment(self) -> None:
        assert decode("Straß".encode()[:-1]) == "Stra"

    def test_portuguese_cp1252_is_not_read_as_a_central_european_code_page(self) -> None:
        text = "Não consigo acessar a minha conta, a página de configurações está em branco."
        assert decode(text.encode("cp1252")) == text

    @pytest.mark.parametrize(
        ("text", "encoding"),
        [
            ("Привет, у меня не работает принтер, пожалуйста помогите. Спасибо!", "cp1251"),  # noqa: RUF001
            ("Ελπίζω να είστε καλά. Ο εκτυπωτής δεν λειτουργεί.", "cp1253"),  # noqa: RUF001
            ("プリンターが動作しません。助けてください。", "shift_jis"),
        ],
    )
    def test_non_latin_legacy_encodings(self, text: str, encoding: str) -> None:
        assert decode(text.encode(encoding)) == text

    @pytest.mark.parametrize(
        "data", [b"\xff\xfe\x00\x81\x8d\x90", bytes(range(256)), b"\x00\x00\x00", b"\xc3"]
    )
    def test_odd_bytes_never_raise(self, data: bytes) -> None:
        assert isinstance(decode(data), str)

    def test_none_and_empty(self) -> None:
        assert decode(None) == ""
        assert decode(b"") == ""
        assert decode("already text") == "already text"

    @pytest.mark.parametrize(
        ("content_type", "expected"),
        [
            ("text/html; charset=ISO-8859-1", "ISO-8859-1"),
            ('text/plain; format=flowed; charset="utf-8"', "utf-8"),
            ("text/plain", None),
            (None, None),
        ],
    )
    def test_charset_of(self, content_type: str | None, expected: str | None) -> None:
        assert charset_of(content_type) == expected


class TestHtml:
    def test_script_style_and_head_are_dropped(self) -> None:
        html = (
            "<html><head><title>Ticket</title><style>p {color: red}</style></head>"
            "<body><script>alert('x')</script><p>My printer is broken.</p>"
            "<noscript>enable js</noscript></body></html>"
        )
        assert html_to_text(html) == "My printer is broken."

    def test_block_elements_become_lines(self) -> None:
        html = "<div>Hello team,</div><p>first line<br>second line</p><ul><li>a</li><li>b</li></ul>"
        assert html_to_text(html).split("\n") == [
            "Hello team,",
            "first line",
            "second line",
            "a",
            "b",
        ]

    def test_inline_whitespace_collapses_and_entities_decode(self) -> None:
        assert html_to_text("<p>a&nbsp;&amp;   <b>b</b>\n c</p>") == "a\xa0& b c"

    def test_quoted_blocks_are_removed(self) -> None:
        html = (
            "<div>New question</div>"
            '<div class="gmail_quote">On Mon, Jane wrote:<blockquote>old</blockquote></div>'
            "<blockquote type='cite'>older</blockquote>"
        )
        assert html_to_text(html) == "New question"

    def test_clean_body_detects_html_without_content_type(self) -> None:
        assert clean_body("<p>Hello</p><p>World</p>") == "Hello\nWorld"

    def test_plain_text_with_angle_brackets_is_not_html(self) -> None:
        body = "Please call me.\nJane <jane@example.com>"
        assert not looks_like_html(body)
        assert clean_body(body, "text/plain") == body

    def test_html_bytes_with_declared_charset(self) -> None:
        body = "<p>Grüße</p>".encode("latin-1")
        assert clean_body(body, "text/html; charset=iso-8859-1") == "Grüße"


class TestQuotedReplies:
    def test_lines_starting_with_gt_are_dropped(self) -> None:
        text = "My answer\n> your question\n>> older\nmore of mine"
        assert strip_quoted_reply(text) == "My answer\nmore of mine"

    @pytest.mark.parametrize(
        "attribution",
        [
            "On Tue, 4 Jun 2024 at 10:12, Jane Doe <jane@example.com> wrote:",
            "On 04.06.2024 10:12, support@example.com wrote:",
            "Am 04.06.2024 um 10:12 schrieb Jane Doe <jane@example.com>:",
            "Am Di., 4. Juni 2024 um 10:12 Uhr schrieb Support <support@example.com>:",
        ],
    )
    def test_attribution_cuts_the_rest(self, attribution: str) -> None:
        text = f"The VPN still fails.\n\n{attribution}\nWe have reset your account.\nRegards"
        assert strip_quoted_reply(text).strip() == "The VPN still fails."

    def test_wrapped_attribution(self) -> None:
        text = (
            "Still broken.\nOn Tue, 4 Jun 2024 at 10:12, Jane Doe <\njane@example.com> wrote:\nold"
        )
        assert strip_quoted_reply(text).strip() == "Still broken."

    @pytest.mark.parametrize(
        "separator", ["-----Original Message-----", "-----Ursprüngliche Nachricht-----"]
    )
    def test_original_message_separator(self, separator: str) -> None:
        text = f"Bitte dringend prüfen.\n{separator}\nFrom: a\nold text"
        assert strip_quoted_reply(text).strip() == "Bitte dringend prüfen."

    @pytest.mark.parametrize(
        "header",
        [
            "From: Support <support@example.com>\nSent: Monday, June 3, 2024 9:00\nTo: Jane",
            "Von: Support <support@example.com>\nGesendet: Montag, 3. Juni 2024 09:00\nAn: Jane",
            "*From:* Support\n*Sent:* Monday",
        ],
    )
    def test_outlook_header_block(self, header: str) -> None:
        text = f"Thanks, but it still fails.\n\n{header}\nSubject: RE: VPN\n\nold text"
        assert strip_quoted_reply(text).strip() == "Thanks, but it still fails."

    def test_a_lone_from_line_is_kept(self) -> None:
        text = "From: the accounting team\nWe were charged twice."
        assert strip_quoted_reply(text) == text

    def test_bare_forward_keeps_its_text(self) -> None:
        text = "> only quoted content\n> nothing new"
        assert strip_quoted_reply(text) == "only quoted content\nnothing new"


class TestSignature:
    def test_signature_after_delimiter_is_dropped(self) -> None:
        assert strip_signature("Help please\n-- \nJane Doe\nACME Corp") == "Help please"

    def test_delimiter_without_trailing_space(self) -> None:
        assert strip_signature("Help please\n--\nJane") == "Help please"

    def test_delimiter_as_first_line_is_ignored(self) -> None:
        assert strip_signature("-- \nonly this") == "-- \nonly this"

    def test_dashes_inside_a_line_are_kept(self) -> None:
        assert strip_signature("a -- b\nc") == "a -- b\nc"


class TestNormalizeAndLimits:
    def test_nfc_and_whitespace(self) -> None:
        decomposed = "Gru\u0308\u00dfe\t\tan  alle\r\n\r\n\r\n\r\nbis\u200b bald "
        assert normalize(decomposed) == "Grüße an alle\n\nbis bald"

    def test_emoji_survive(self) -> None:
        assert clean_body("Great service 😀🎉 thanks") == "Great service 😀🎉 thanks"

    def test_truncate_prefers_a_word_boundary(self) -> None:
        assert truncate("alpha beta gamma", 12) == "alpha beta"
        assert truncate("short", 10) == "short"
        assert len(truncate("x" * 100, 10)) == 10

    def test_one_megabyte_body_is_capped(self) -> None:
        body = "The server is down again. " * 40_000  # about 1 MB
        result = clean_body(body)
        assert 0 < len(result) <= MAX_CHARS
        assert result.startswith("The server is down again.")

    def test_ten_megabyte_bytes_are_cut_before_decoding(self) -> None:
        body = (GERMAN + " ") * 140_000  # about 10 MB
        result = clean_body(body.encode("latin-1", errors="replace"), max_chars=500)
        assert 0 < len(result) <= 500
        assert result.startswith(GERMAN.encode("latin-1", errors="replace").decode("latin-1")[:20])


class TestPrepare:
    @pytest.mark.parametrize("subject", [None, "", "   "])
    @pytest.mark.parametrize("body", [None, "", " \n\t ", b""])
    def test_empty_inputs_give_empty_text(
        self, subject: str | None, body: str | bytes | None
    ) -> None:
        assert prepare_ticket_text(subject, body) == ""

    def test_subject_prefixes_are_removed(self) -> None:
        assert clean_subject("AW: Re: WG: Drucker defekt") == "Drucker defekt"
        assert clean_subject("Fwd: Re[2]: invoice") == "invoice"
        assert clean_subject("Reset password") == "Reset password"

    def test_subject_and_body_joined(self) -> None:
        body = "<p>It is <b>broken</b></p><div>-- </div><div>Jane</div>"
        text = prepare_ticket_text("Printer", body, "text/html")
        assert text == "Printer\nIt is broken"

    def test_custom_separator_and_limit(self) -> None:
        assert prepare_ticket_text("S", "body text", separator=" | ") == "S | body text"
        assert len(prepare_ticket_text("S", "word " * 1000, max_chars=100)) <= 100
