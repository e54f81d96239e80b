"""Reply extraction on bodies written the way real mail clients write them."""

from __future__ import annotations

import pytest

from maild.domain.message import ExtractedReply
from maild.threading.reply import extract_reply

# (id, body, expected new text, a sentence of the quoted history or None, expected signature)
PLAIN_CASES = [
    (
        "gmail-en-wrapped-attribution",
        "Hi Jane,\n\nwe replaced the toner, the printer works again.\n\nBest,\nAlice\n\n"
        "On Fri, Nov 20, 2026 at 10:00 AM Jane Customer <jane@acme.test>\nwrote:\n\n"
        "> Hello,\n>\n> my printer is on fire since this morning.\n>\n> Jane\n>\n",
        "Hi Jane,\n\nwe replaced the toner, the printer works again.\n\nBest,\nAlice",
        "my printer is on fire since this morning.",
        "",
    ),
    (
        "gmail-en-one-line-attribution",
        "#note\nChecked the concentrator logs: lease renewal fails.\n\n"
        "On Fri, Nov 20, 2026 at 10:00 AM Jane Customer <jane@acme.test> wrote:\n\n"
        "> Hi,\n> my VPN drops every hour since Monday.\n",
        "#note\nChecked the concentrator logs: lease renewal fails.",
        "my VPN drops every hour since Monday.",
        "",
    ),
    (
        "outlook-en-underscore-and-header-block",
        "Thanks, that fixed it.\n\nJane\n\n________________________________\n"
        "From: Support <support@example.com>\nSent: Friday, November 20, 2026 10:00 AM\n"
        "To: Jane Customer <jane@acme.test>\nSubject: [#42] Printer on fire\n\n"
        "Hello Jane,\nplease restart the printer and try again.\n",
        "Thanks, that fixed it.\n\nJane",
        "please restart the printer and try again.",
        "",
    ),
    (
        "outlook-en-original-message",
        "/stage pending\nHi Jane,\n\nplease update the client to 5.2 and tell us if it helps.\n\nAlice\n\n"
        "-----Original Message-----\nFrom: Jane Customer <jane@acme.test>\n"
        "Sent: Friday, November 20, 2026 10:00 AM\nTo: support@example.com\n"
        "Subject: VPN drops every hour\n\nHi,\nmy VPN drops every hour since Monday.",
        "/stage pending\nHi Jane,\n\nplease update the client to 5.2 and tell us if it helps.\n\nAlice",
        "my VPN drops every hour since Monday.",
        "",
    ),
    (
        "outlook-de-header-block",
        "Danke, funktioniert wieder.\n\nMit freundlichen Grüßen\nJana Kundin\n\n"
        "Von: Support <support@example.com>\nGesendet: Freitag, 20. November 2026 10:00\n"
        "An: Jana Kundin <jana@acme.test>\nBetreff: [#42] Drucker brennt\n\n"
        "Hallo Frau Kundin,\nbitte starten Sie den Drucker neu.\n",
        "Danke, funktioniert wieder.\n\nMit freundlichen Grüßen\nJana Kundin",
        "bitte starten Sie den Drucker neu.",
        "",
    ),
    (
        "outlook-de-ursprüngliche-nachricht",
        "Passt, danke!\n\n-----Ursprüngliche Nachricht-----\n"
        "Von: Support [mailto:support@example.com]\nGesendet: Freitag, 20. November 2026 10:00\n"
        "An: Jana Kundin\nBetreff: AW: [#42] Drucker brennt\n\nBitte den Treiber aktualisieren.\n",
        "Passt, danke!",
        "Bitte den Treiber aktualisieren.",
        "",
    ),
    (
        "outlook-ru-header-block",
        "Спасибо, всё работает.\n\nОт: Support <support@example.com>\n"
        "Отправлено: 20 ноября 2026 г. 10:00\nКому: Иван Петров <ivan@acme.test>\n"
        "Тема: [#42] Принтер горит\n\nЗдравствуйте, Иван!\nПерезапустите принтер, пожалуйста.\n",
        "Спасибо, всё работает.",
        "Перезапустите принтер, пожалуйста.",
        "",
    ),
    (
        "outlook-ru-исходное-сообщение",
        "Проверил, ошибка ушла.\n\n-----Исходное сообщение-----\nОт: Support [mailto:support@example.com]\n"
        "Отправлено: 20 ноября 2026 г. 10:00\nКому: Иван Петров\nТема: RE: [#42] Принтер горит\n\n"
        "Обновите драйвер принтера.\n",
        "Проверил, ошибка ушла.",
        "Обновите драйвер принтера.",
        "",
    ),
    (
        "outlook-cs-header-block",
        "Děkuji, už to funguje.\n\nOd: Support <support@example.com>\n"
        "Odesláno: pátek 20. listopadu 2026 10:00\nKomu: Jana Nováková <jana@acme.test>\n"
        "Předmět: [#42] Tiskárna hoří\n\nDobrý den,\nrestartujte prosím tiskárnu.\n",
        "Děkuji, už to funguje.",
        "restartujte prosím tiskárnu.",
        "",
    ),
    (
        "outlook-cs-původní-zpráva",
        "Vyřešeno, díky.\n\n-----Původní zpráva-----\nOd: Support [mailto:support@example.com]\n"
        "Odesláno: pátek 20. listopadu 2026 10:00\nKomu: Jana Nováková\nPředmět: [#42] Tiskárna hoří\n\n"
        "Aktualizujte prosím ovladač.\n",
        "Vyřešeno, díky.",
        "Aktualizujte prosím ovladač.",
        "",
    ),
    (
        "outlook-fr-header-block",
        "Merci, c'est réglé.\n\nDe : Support <support@example.com>\n"
        "Envoyé : vendredi 20 novembre 2026 10:00\nÀ : Jeanne Client <jeanne@acme.test>\n"
        "Objet : [#42] Imprimante en feu\n\nBonjour Jeanne,\nveuillez redémarrer l'imprimante.\n",
        "Merci, c'est réglé.",
        "veuillez redémarrer l'imprimante.",
        "",
    ),
    (
        "outlook-es-header-block",
        "Gracias, ya funciona.\n\nDe: Support <support@example.com>\n"
        "Enviado: viernes, 20 de noviembre de 2026 10:00\nPara: Juana Cliente <juana@acme.test>\n"
        "Asunto: [#42] La impresora está en llamas\n\nHola Juana,\nreinicie la impresora, por favor.\n",
        "Gracias, ya funciona.",
        "reinicie la impresora, por favor.",
        "",
    ),
    (
        "outlook-ios-signature-above-header-block",
        "Ok, I will try tonight.\n\nGet Outlook for iOS<https://aka.ms/o0ukef>\n"
        "________________________________\nFrom: Support <support@example.com>\n"
        "Sent: Friday, November 20, 2026 10:00:00 AM\nTo: Jane Customer <jane@acme.test>\n"
        "Subject: [#42] Printer on fire\n\nPlease update the printer firmware.\n",
        "Ok, I will try tonight.",
        "Please update the printer firmware.",
        "Get Outlook for iOS<https://aka.ms/o0ukef>",
    ),
    (
        "thunderbird-en",
        "Still broken after the restart.\n\nOn 20.11.26 10:00, Jane wrote:\n"
        "> Please restart the printer and try again.\n",
        "Still broken after the restart.",
        "Please restart the printer and try again.",
        "",
    ),
    (
        "apple-mail-macos",
        "Yes, that was it. Thank you!\n\nOn 20 Nov 2026, at 10:00, Jane <jane@acme.test> wrote:\n\n"
        "> Could you check the network cable?\n> \n> Jane\n",
        "Yes, that was it. Thank you!",
        "Could you check the network cable?",
        "",
    ),
    (
        "iphone-signature-and-quoted-attribution",
        "Rebooted, it prints again.\n\nSent from my iPhone\n\n"
        "> On 20 Nov 2026, at 10:00, Jane <jane@acme.test> wrote:\n> \n"
        "> Have you tried turning it off and on?\n",
        "Rebooted, it prints again.",
        "Have you tried turning it off and on?",
        "Sent from my iPhone",
    ),
    (
        "gmail-de-wrapped-inside-address",
        "Danke, klappt jetzt.\n\n"
        "Am Fr., 20. Nov. 2026 um 10:00 Uhr schrieb Jana Kundin <\njana@acme.test>:\n\n"
        "> Der Drucker brennt seit heute Morgen.\n",
        "Danke, klappt jetzt.",
        "Der Drucker brennt seit heute Morgen.",
        "",
    ),
    (
        "gmail-fr-wrapped-nbsp",
        "Merci, tout fonctionne.\n\nLe ven. 20 nov. 2026 à 10:00, Jeanne Client <jeanne@acme.test> a\n"
        "écrit\u00a0:\n\n> L'imprimante est en feu depuis ce matin.\n",
        "Merci, tout fonctionne.",
        "L'imprimante est en feu depuis ce matin.",
        "",
    ),
    (
        "gmail-es",
        "Gracias, resuelto.\n\nEl vie, 20 nov 2026 a las 10:00, Juana Cliente (<juana@acme.test>)\n"
        "escribió:\n\n> La impresora está en llamas.\n",
        "Gracias, resuelto.",
        "La impresora está en llamas.",
        "",
    ),
    (
        "thunderbird-ru-пишет",
        "Спасибо, помогло.\n\n20.11.2026 10:00, Иван Петров пишет:\n> Принтер горит с самого утра.\n",
        "Спасибо, помогло.",
        "Принтер горит с самого утра.",
        "",
    ),
    (
        "apple-ru-написал(а)",
        "Проверил, работает.\n\n20 нояб. 2026 г., в 10:00, Иван Петров <ivan@acme.test> написал(а):\n\n"
        "> Перезапустите принтер и попробуйте снова.\n",
        "Проверил, работает.",
        "Перезапустите принтер и попробуйте снова.",
        "",
    ),
    (
        "gmail-ru-attribution-without-verb",
        "Работает, спасибо.\n\nпт, 20 нояб. 2026 г. в 10:00, Иван Петров <ivan@acme.test>:\n\n"
        "> Принтер горит с утра.\n",
        "Работает, спасибо.",
        "Принтер горит с утра.",
        "",
    ),
    (
        "thunderbird-cs-dne-napsal(a)",
        "Už to tiskne.\n\nDne 20. 11. 2026 v 10:00 Jana Nováková napsal(a):\n> Tiskárna hoří od rána.\n",
        "Už to tiskne.",
        "Tiskárna hoří od rána.",
        "",
    ),
    (
        "gmail-cs-napsal",
        "Díky, vyřešeno.\n\npá 20. 11. 2026 v 10:00 odesílatel Jana Nováková <jana@acme.test> napsal:\n\n"
        "> Tiskárna hoří od rána.\n",
        "Díky, vyřešeno.",
        "Tiskárna hoří od rána.",
        "",
    ),
    (
        "nested-history",
        "Ok, closing on our side.\n\n"
        "On Fri, Nov 20, 2026 at 11:00 AM Support <support@example.com> wrote:\n\n"
        "> Did the restart help?\n>\n"
        "> On Fri, Nov 20, 2026 at 10:00 AM Jane Customer <jane@acme.test> wrote:\n"
        ">\n>> My printer is on fire.\n",
        "Ok, closing on our side.",
        "My printer is on fire.",
        "",
    ),
    (
        "interleaved-below-attribution",
        "On Fri, Nov 20, 2026 at 10:00 AM Jane Customer <jane@acme.test> wrote:\n"
        "> Which model is it?\n\nHP LaserJet 4000.\n\n> Is it still on fire?\n\nNo, the fire is out.\n\n"
        "-- \nJane Customer\n",
        "HP LaserJet 4000.\n\nNo, the fire is out.",
        "Is it still on fire?",
        "-- \nJane Customer",
    ),
    (
        "interleaved-without-attribution",
        "Hi Alice,\n\n> Which driver version do you run?\n\n5.1.3, installed last week.\n\n"
        "> Does it happen on every page?\n> Or only on the first one?\n\nOnly on the first.\n",
        "Hi Alice,\n\n5.1.3, installed last week.\n\nOnly on the first.",
        "Or only on the first one?",
        "",
    ),
    (
        "url-kept-intact",
        "The portal at https://portal.acme.test/tickets?id=42&view=full still shows the old status.\n"
        "See also http://status.acme.test:8080/incidents/\n\n"
        "On Fri, Nov 20, 2026 at 10:00 AM Support <support@example.com> wrote:\n\n"
        "> The incident is resolved.\n",
        "The portal at https://portal.acme.test/tickets?id=42&view=full still shows the old status.\n"
        "See also http://status.acme.test:8080/incidents/",
        "The incident is resolved.",
        "",
    ),
    (
        "only-history-no-new-text",
        "On Fri, Nov 20, 2026 at 10:00 AM Jane Customer <jane@acme.test> wrote:\n\n"
        "> My printer is on fire.\n",
        "",
        "My printer is on fire.",
        "",
    ),
    (
        "crlf-line-endings",
        "Fixed, thanks.\r\n\r\nOn 20.11.26 10:00, Jane wrote:\r\n> Please restart the printer.\r\n",
        "Fixed, thanks.",
        "Please restart the printer.",
        "",
    ),
]


@pytest.mark.parametrize(
    ("body", "text", "quoted", "signature"), [pytest.param(*c[1:], id=c[0]) for c in PLAIN_CASES]
)
def test_plain_text_reply(body: str, text: str, quoted: str, signature: str) -> None:
    r = extract_reply(body)
    assert r.text == text
    assert quoted in r.quoted
    assert quoted not in r.text
    assert r.signature == signature


NO_QUOTE_CASES = [
    ("plain-message", "Hello,\n\nmy printer is on fire.\nPlease send help.\n\nJane\n"),
    (
        "prose-mentions-from-and-to",
        "Hi,\n\nFrom: our side the setup looks fine.\nTo reproduce, open the report from the Sales folder.\n"
        "Subject: line of the report is empty though.\n\nJane",
    ),
    ("prose-mentions-wrote", "As my colleague wrote:\nthe printer needs a new fuser unit.\n\nJane"),
    (
        "gmail-forward-is-content",
        "---------- Forwarded message ---------\nFrom: Jane Customer <jane@acme.test>\n"
        "Date: Fri, Nov 20, 2026 at 10:00 AM\nSubject: Printer on fire\nTo: <it@acme.test>\n\n"
        "My printer is on fire.\n",
    ),
    (
        "gmail-forward-after-new-text",
        "Please look at this one, it came to the wrong address.\n\n"
        "---------- Forwarded message ---------\nFrom: Jane Customer <jane@acme.test>\n"
        "Date: Fri, Nov 20, 2026 at 10:00 AM\nSubject: Printer on fire\nTo: <it@acme.test>\n\n"
        "My printer is on fire.\n\nOn Thu, Nov 19, 2026 at 9:00 AM IT <it@acme.test> wrote:\n> Noted.\n",
    ),
    (
        "apple-forward-is-content",
        "FYI\n\nBegin forwarded message:\n\n> From: Jane Customer <jane@acme.test>\n"
        "> Subject: Printer on fire\n> Date: 20 November 2026 at 10:00:00 CET\n> To: it@acme.test\n> \n"
        "> My printer is on fire.\n",
    ),
    (
        "tagline-words-in-prose",
        "Hi,\n\nSent via DHL this morning.\n\nThe tracking number is 1Z999AA10123456784.\n\nJane",
    ),
    (
        "date-address-and-colon-in-prose",
        "Hi,\n\nplease send the report to jane@acme.test by 20.11.2026:\n\n1. printer log\n"
        "2. photo of the display\n\nJane",
    ),
    (
        "memo-lines-without-sender",
        "Hi,\n\nour notice says:\n\nPrinter: HP LaserJet 4000\nRoom: 3.12\nError: 49.4C02\n\n"
        "What now?",
    ),
    (
        "double-dash-before-long-text-is-not-a-signature",
        "Steps:\n--\n"
        + "".join(f"step {n}: check the paper tray number {n} and close it again\n" for n in range(8)),
    ),
]


@pytest.mark.parametrize("body", [pytest.param(c[1], id=c[0]) for c in NO_QUOTE_CASES])
def test_message_without_quote_markers_is_kept_whole(body: str) -> None:
    assert extract_reply(body) == ExtractedReply(text=body.rstrip(), quoted="", signature="")


@pytest.mark.parametrize(
    "signature",
    [
        "Sent from my iPhone",
        "Sent from my iPad",
        "Sent from Outlook for Android",
        "Get Outlook for iOS<https://aka.ms/o0ukef>",
        "Sent from Mail<https://go.microsoft.com/fwlink/?LinkId=550986> for Windows",
        "Gesendet von meinem iPhone",
        "Von meinem iPhone gesendet",
        "Отправлено с iPhone",
        "Odesláno z iPhonu",
        "Envoyé de mon iPhone",
        "Enviado desde mi iPhone",
        "Sent from my Samsung Galaxy smartphone.",
        "Sent from Yahoo Mail on Android",
    ],
)
def test_mobile_signature_is_cut(signature: str) -> None:
    r = extract_reply(f"Thanks, it works now.\n\n{signature}\n")
    assert r == ExtractedReply(text="Thanks, it works now.", quoted="", signature=signature)


def test_dash_dash_space_signature() -> None:
    body = "Printer works again, thanks.\n\n-- \nJane Customer\nACME Corp | +1 555 0100\nhttps://acme.test\n"
    assert extract_reply(body) == ExtractedReply(
        text="Printer works again, thanks.",
        quoted="",
        signature="-- \nJane Customer\nACME Corp | +1 555 0100\nhttps://acme.test",
    )


def test_double_dash_without_space_before_short_lines() -> None:
    r = extract_reply("Done, the queue is empty.\n\n--\nBob\nIT desk, room 4.12\n")
    assert (r.text, r.quoted) == ("Done, the queue is empty.", "")
    assert r.signature == "--\nBob\nIT desk, room 4.12"


def test_signature_above_outlook_history() -> None:
    body = (
        "Works now.\n\n-- \nJane Customer\n\n________________________________\n"
        "From: Support <support@example.com>\nSent: Friday, November 20, 2026 10:00 AM\n"
        "To: Jane Customer <jane@acme.test>\nSubject: [#42] Printer on fire\n\nPlease restart it.\n"
    )
    r = extract_reply(body)
    assert (r.text, r.signature) == ("Works now.", "-- \nJane Customer")
    assert r.quoted.startswith("____") and "Please restart it." in r.quoted


GMAIL_HTML = (
    '<div dir="ltr">Hi Jane,<div><br></div><div>we restarted the print server &amp; cleared the queue.</div>'
    '</div><br><div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">'
    "On Fri, Nov 20, 2026 at 10:00 AM Jane Customer &lt;<a href=\"mailto:jane@acme.test\">jane@acme.test</a>"
    '&gt; wrote:<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
    'border-left:1px solid rgb(204,204,204);padding-left:1ex"><div dir="ltr">My printer is on fire.</div>'
    "</blockquote></div>\r\n"
)

OUTLOOK_WEB_HTML = (
    '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
    '<style type="text/css" style="display:none;"> P {margin-top:0;margin-bottom:0;} </style></head>'
    '<body dir="ltr"><div class="elementToProof" style="font-family: Aptos, Calibri, Helvetica, sans-serif;'
    ' font-size: 12pt; color: rgb(0, 0, 0);">Thanks, the printer prints again.</div>'
    '<div class="elementToProof" style="font-size: 12pt;"><br></div>'
    '<div class="elementToProof" style="font-size: 12pt;">Jane</div>'
    '<div id="appendonsend"></div><hr style="display:inline-block;width:98%" tabindex="-1">'
    '<div id="divRplyFwdMsg" dir="ltr">'
    '<font face="Calibri, sans-serif" style="font-size:11pt" color="#000000">'
    "<b>From:</b> Support &lt;support@example.com&gt;<br><b>Sent:</b> Friday, November 20, 2026 10:00 AM<br>"
    "<b>To:</b> Jane Customer &lt;jane@acme.test&gt;<br><b>Subject:</b> [#42] Printer on fire</font>"
    '<div>&nbsp;</div></div><div><div dir="ltr">Please restart the printer and try again.</div></div>'
    "</body></html>"
)

OUTLOOK_DESKTOP_DE_HTML = (
    '<html><body lang="DE"><div class="WordSection1">'
    '<p class="MsoNormal">Danke, jetzt geht es.<o:p></o:p></p>'
    '<p class="MsoNormal"><o:p>&nbsp;</o:p></p><p class="MsoNormal">Jana<o:p></o:p></p>'
    '<p class="MsoNormal"><o:p>&nbsp;</o:p></p>'
    "<div><div style=\"border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm\">"
    '<p class="MsoNormal"><b>Von:</b> Support &lt;support@example.com&gt; <br><b>Gesendet:</b> Freitag, '
    "20. November 2026 10:00<br><b>An:</b> Jana Kundin &lt;jana@acme.test&gt;<br><b>Betreff:</b> [#42] "
    "Drucker brennt<o:p></o:p></p></div></div>"
    '<p class="MsoNormal"><o:p>&nbsp;</o:p></p><p class="MsoNormal">Bitte starten Sie den Drucker neu.'
    "<o:p></o:p></p></div></body></html>"
)

APPLE_HTML = (
    '<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8"></head>'
    '<body dir="auto"><div dir="ltr">Yes, the cable was loose.</div><div dir="ltr"><br></div>'
    '<div dir="ltr">Sent from my iPhone</div><div dir="ltr"><br>'
    '<blockquote type="cite">On 20 Nov 2026, at 10:00, Jane &lt;jane@acme.test&gt; wrote:<br><br>'
    "</blockquote>"
    '</div><blockquote type="cite"><div dir="ltr">Could you check the network cable?</div></blockquote>'
    "</body></html>"
)

THUNDERBIRD_HTML = (
    '<html><body><p>Still broken, see the attached photo.</p><div class="moz-cite-prefix">On 20.11.26 10:00, '
    'Jane wrote:<br></div><blockquote type="cite" cite="mid:v1@acme.test"><p>Please restart the printer.</p>'
    '</blockquote><pre class="moz-signature" cols="72">-- \nAlice, IT desk</pre></body></html>'
)


@pytest.mark.parametrize(
    ("html", "text", "quoted", "signature"),
    [
        pytest.param(
            GMAIL_HTML,
            "Hi Jane,\n\nwe restarted the print server & cleared the queue.",
            "My printer is on fire.",
            "",
            id="gmail-div-gmail_quote",
        ),
        pytest.param(
            OUTLOOK_WEB_HTML, "Thanks, the printer prints again.\n\nJane",
            "Please restart the printer and try again.", "", id="outlook-web-divRplyFwdMsg",
        ),
        pytest.param(
            OUTLOOK_DESKTOP_DE_HTML,
            "Danke, jetzt geht es.\n\nJana",
            "Bitte starten Sie den Drucker neu.",
            "",
            id="outlook-desktop-de-header-block",
        ),
        pytest.param(
            APPLE_HTML,
            "Yes, the cable was loose.",
            "Could you check the network cable?",
            "Sent from my iPhone",
            id="apple-blockquote-type-cite",
        ),
        pytest.param(
            THUNDERBIRD_HTML, "Still broken, see the attached photo.", "Please restart the printer.",
            "-- \nAlice, IT desk", id="thunderbird-moz-cite-prefix",
        ),
    ],
)
def test_html_only_reply(html: str, text: str, quoted: str, signature: str) -> None:
    r = extract_reply("", html)
    assert r.text == text
    assert quoted in r.quoted
    assert r.signature == signature


def test_text_part_is_preferred_over_html() -> None:
    r = extract_reply("Plain part.\n\nOn 20.11.26 10:00, Jane wrote:\n> old\n", "<p>HTML part.</p>")
    assert (r.text, r.quoted) == ("Plain part.", "On 20.11.26 10:00, Jane wrote:\n> old")


def test_whitespace_text_falls_back_to_html() -> None:
    assert extract_reply(" \r\n", "<div>From the HTML part.</div>").text == "From the HTML part."


def test_empty_message() -> None:
    assert extract_reply("") == ExtractedReply(text="", quoted="", signature="")
    assert extract_reply("", None) == ExtractedReply(text="", quoted="", signature="")


def test_html_only_reply_as_parse_hands_it_over() -> None:
    """parse.py fills `text` of an HTML-only mail with html_to_text: the HTML still decides."""
    from maild.threading.reply import html_to_text

    html = (
        '<div>Добрый день,</div><div>&nbsp;</div><div>всё работает.</div><div>&nbsp;</div>'
        '<div>17.11.2021, 15:32, "Support" &lt;support@example.com&gt;:</div>'
        "<blockquote><div>Перезапустите службу печати.</div></blockquote>"
    )
    r = extract_reply(html_to_text(html), html, flattened=True)
    assert r.text == "Добрый день,\n\nвсё работает."
    assert "Перезапустите службу печати." in r.quoted
    assert "\ue000" not in r.quoted + r.text + r.signature


def test_tagline_under_double_dash_then_history() -> None:
    body = (
        "Получил, спасибо.\n\n--\nОтправлено из мобильной Почты Mail.ru\n\n\n"
        "Среда, 17 ноября 2021, 15:32 +03:00 от Support <support@example.com>:\n>Посылка отправлена.\n"
    )
    r = extract_reply(body)
    assert r.text == "Получил, спасибо."
    assert r.signature == "--\nОтправлено из мобильной Почты Mail.ru"
    assert "Посылка отправлена." in r.quoted


def test_tagline_with_unquoted_history_below() -> None:
    body = (
        "Confirmed.\n\nSent from my Galaxy\n\n-------- Original message --------\n"
        "From: Support <support@example.com> \nDate: 20/11/2026 10:00 (GMT+01:00) \n"
        "To: Jane <jane@acme.test> \nSubject: Visit \n\nCan we come on Monday?\n"
    )
    r = extract_reply(body)
    assert (r.text, r.signature) == ("Confirmed.", "Sent from my Galaxy")
    assert "Can we come on Monday?" in r.quoted
