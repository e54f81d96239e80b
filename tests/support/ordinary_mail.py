"""Writes tests/eml/ordinary/gen-*.eml: ordinary customer mail, as real clients send it, that
must classify as "normal" (issue 21: ≤ 0.5 % of ordinary mail misclassified; on our own set, none).

Deterministic (no clock, no randomness beyond a fixed seed): run it again and the files come out
byte for byte the same, so they are committed and read like any other fixture:

    .venv/bin/python -m tests.support.ordinary_mail

Clients (their header and MIME habits): Gmail (web and Android), Outlook desktop with Exchange,
Outlook.com, Apple Mail, iPhone Mail, Thunderbird, Samsung Email, and the webmails of Yahoo, GMX,
Roundcube, mail.ru and Yandex. Languages: EN DE FR ES IT NL SV FI NO DA PL CS RU PT TR JA ZH KO.
Half are new questions, half answers to the desk's acknowledgement, quoting it in the client's way.
"""

from __future__ import annotations

import base64
import hashlib
import quopri
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "eml" / "ordinary"
COUNT = 260


@dataclass(frozen=True)
class Lang:
    code: str
    names: tuple[str, ...]
    domain: str
    hello: str
    bye: str
    reply_prefix: str  # what this language's clients put before a reply's subject
    wrote: str  # the quote header, {date} and {who}
    mobile: str  # "Sent from my iPhone" in this language
    topics: tuple[tuple[str, str], ...]  # (subject, body)


LANGS = [
    Lang("en", ("Jane Miller", "Tom Baker", "Priya Shah"), "acme.test", "Hi,", "Thanks,", "Re:",
         "On {date}, {who} wrote:", "Sent from my iPhone", (
             ("Invoice 2026-1142 charged twice", "our card was charged twice for invoice 2026-1142 this month.\n"
              "Could you refund the second payment, please?"),
             ("Cannot log in after password reset", "since I reset my password yesterday the login page just "
              "reloads.\nI tried Chrome and Firefox, same thing."),
             ("Export to CSV missing columns", "when I export the customer list to CSV the phone and VAT columns "
              "are empty, although they are filled in the app."))),
    Lang("de", ("Julia Schneider", "Markus Weber", "Sabine Krüger"), "firma.test", "Hallo zusammen,",
         "Viele Grüße", "AW:", "Am {date} schrieb {who}:", "Von meinem iPhone gesendet", (
             ("Rechnung doppelt abgebucht", "die Rechnung 2026-1142 wurde diesen Monat zweimal von unserem Konto "
              "abgebucht.\nKönnen Sie die zweite Zahlung bitte erstatten?"),
             ("Anmeldung nach Passwortänderung nicht möglich", "seit ich gestern mein Passwort geändert habe, lädt "
              "die Anmeldeseite nur neu.\nIn Chrome und Firefox passiert dasselbe."),
             ("Lieferung noch nicht angekommen", "unsere Bestellung 4711 vom 2. November ist noch nicht "
              "angekommen.\nKönnen Sie bitte nachsehen, wo das Paket steckt?"))),
    Lang("fr", ("Claire Dubois", "Julien Martin", "Amélie Petit"), "societe.test", "Bonjour,", "Cordialement,",
         "RE :", "Le {date}, {who} a écrit :", "Envoyé de mon iPhone", (
             ("Facture prélevée deux fois", "notre carte a été débitée deux fois pour la facture 2026-1142.\n"
              "Pouvez-vous rembourser le second paiement ?"),
             ("Impossible de me connecter", "depuis la réinitialisation de mon mot de passe, la page de connexion "
              "se recharge sans fin.\nMême problème sous Chrome et Firefox."),
             ("Ajouter un utilisateur", "comment puis-je ajouter deux collègues de la comptabilité à notre "
              "compte ?\nJe ne trouve pas l'option dans les paramètres."))),
    Lang("es", ("Lucía García", "Javier López", "Carmen Ruiz"), "empresa.test", "Hola,", "Saludos,", "RE:",
         "El {date}, {who} escribió:", "Enviado desde mi iPhone", (
             ("Factura cobrada dos veces", "nos han cobrado dos veces la factura 2026-1142 este mes.\n"
              "¿Podrían devolver el segundo pago, por favor?"),
             ("No puedo iniciar sesión", "desde que cambié la contraseña ayer, la página de acceso solo se "
              "recarga.\nHe probado con Chrome y Firefox."),
             ("Pedido sin entregar", "nuestro pedido 4711 del 2 de noviembre todavía no ha llegado.\n"
              "¿Pueden comprobar dónde está el paquete?"))),
    Lang("it", ("Giulia Rossi", "Marco Bianchi", "Francesca Romano"), "azienda.test", "Buongiorno,",
         "Cordiali saluti,", "R:", "Il giorno {date} {who} ha scritto:", "Inviato da iPhone", (
             ("Fattura addebitata due volte", "la fattura 2026-1142 ci è stata addebitata due volte questo mese.\n"
              "Potete rimborsare il secondo pagamento?"),
             ("Accesso non riuscito", "da quando ho reimpostato la password la pagina di accesso si ricarica "
              "soltanto.\nStesso problema con Chrome e Firefox."),
             ("Esportazione incompleta", "quando esporto l'elenco clienti in CSV le colonne telefono e partita "
              "IVA sono vuote."))),
    Lang("nl", ("Sanne de Vries", "Daan Jansen", "Eva Bakker"), "bedrijf.test", "Hallo,", "Met vriendelijke groet,",
         "Antw:", "Op {date} schreef {who}:", "Verzonden vanaf mijn iPhone", (
             ("Factuur dubbel afgeschreven", "factuur 2026-1142 is deze maand twee keer afgeschreven.\n"
              "Kunt u de tweede betaling terugstorten?"),
             ("Inloggen lukt niet", "sinds ik gisteren mijn wachtwoord heb gewijzigd, laadt de inlogpagina "
              "alleen opnieuw."),
             ("Bestelling niet ontvangen", "onze bestelling 4711 van 2 november is nog steeds niet binnen.\n"
              "Kunt u nagaan waar het pakket is?"))),
    Lang("sv", ("Anna Lindqvist", "Erik Johansson", "Maja Berg"), "foretag.test", "Hej,", "Vänliga hälsningar",
         "SV:", "Den {date} skrev {who}:", "Skickat från min iPhone", (
             ("Fakturan dragen två gånger", "faktura 2026-1142 har dragits två gånger från vårt kort.\n"
              "Kan ni återbetala den andra betalningen?"),
             ("Kan inte logga in", "sedan jag bytte lösenord i går laddas inloggningssidan bara om."),
             ("Fråga om licenser", "hur många användare ingår i vår licens, och vad kostar en extra?"))),
    Lang("fi", ("Aino Virtanen", "Mikko Korhonen", "Laura Mäkinen"), "yritys.test", "Hei,", "Ystävällisin terveisin",
         "VS:", "{who} kirjoitti {date}:", "Lähetetty iPhonesta", (
             ("Lasku veloitettu kahdesti", "lasku 2026-1142 veloitettiin kortiltamme kahdesti.\n"
              "Voisitteko palauttaa toisen maksun?"),
             ("En pääse kirjautumaan", "salasanan vaihdon jälkeen kirjautumissivu vain latautuu uudelleen."),
             ("Tilaus ei ole saapunut", "tilauksemme 4711 ei ole vieläkään saapunut. Missä paketti on?"))),
    Lang("no", ("Ingrid Hansen", "Ole Nilsen", "Kari Berg"), "firma-no.test", "Hei,", "Med vennlig hilsen",
         "SV:", "{date} skrev {who}:", "Sendt fra min iPhone", (
             ("Faktura trukket to ganger", "faktura 2026-1142 er trukket to ganger fra kortet vårt.\n"
              "Kan dere betale tilbake den andre betalingen?"),
             ("Får ikke logget inn", "etter at jeg endret passordet i går, laster innloggingssiden bare på nytt."),
             ("Spørsmål om eksport", "hvordan eksporterer jeg alle saker fra i fjor til Excel?"))),
    Lang("da", ("Mette Jensen", "Lars Nielsen", "Sofie Larsen"), "firma-dk.test", "Hej,", "Med venlig hilsen",
         "SV:", "Den {date} skrev {who}:", "Sendt fra min iPhone", (
             ("Faktura trukket to gange", "faktura 2026-1142 er blevet trukket to gange på vores kort.\n"
              "Kan I refundere den anden betaling?"),
             ("Kan ikke logge ind", "siden jeg skiftede adgangskode i går, genindlæses login-siden bare."),
             ("Levering mangler", "vores ordre 4711 er endnu ikke leveret. Kan I se, hvor pakken er?"))),
    Lang("pl", ("Anna Kowalska", "Piotr Nowak", "Katarzyna Wiśniewska"), "firma.pl.test", "Dzień dobry,",
         "Pozdrawiam", "Odp:", "W dniu {date} {who} napisał(a):", "Wysłane z iPhone'a", (
             ("Faktura pobrana dwukrotnie", "faktura 2026-1142 została pobrana z naszej karty dwa razy.\n"
              "Czy mogą Państwo zwrócić drugą płatność?"),
             ("Nie mogę się zalogować", "od wczorajszej zmiany hasła strona logowania tylko się przeładowuje."),
             ("Brak dostawy", "nasze zamówienie 4711 z 2 listopada jeszcze nie dotarło. Gdzie jest paczka?"))),
    Lang("cs", ("Jana Nováková", "Petr Svoboda", "Lucie Dvořáková"), "firma.cz.test", "Dobrý den,",
         "S pozdravem", "Re:", "Dne {date} {who} napsal(a):", "Odesláno z iPhonu", (
             ("Faktura stržena dvakrát", "faktura 2026-1142 nám byla z karty stržena dvakrát.\n"
              "Můžete prosím vrátit druhou platbu?"),
             ("Nemohu se přihlásit", "od včerejší změny hesla se přihlašovací stránka jen znovu načte."),
             ("Export do CSV", "při exportu seznamu zákazníků do CSV chybí sloupce telefon a DIČ."))),
    Lang("ru", ("Анна Смирнова", "Дмитрий Иванов", "Ольга Кузнецова"), "kompania.test", "Здравствуйте,",
         "С уважением,", "Re:", "{date}, {who} пишет:", "Отправлено с iPhone", (
             ("Счёт списан дважды", "по счёту 2026-1142 с нашей карты деньги списали дважды.\n"
              "Верните, пожалуйста, второй платёж."),
             ("Не могу войти", "после смены пароля вчера страница входа просто перезагружается."),
             ("Заказ не доставлен", "наш заказ 4711 от 2 ноября до сих пор не доставлен. Где посылка?"))),
    Lang("pt", ("Ana Souza", "João Pereira", "Mariana Costa"), "empresa.br.test", "Olá,", "Atenciosamente,",
         "RES:", "Em {date}, {who} escreveu:", "Enviado do meu iPhone", (
             ("Fatura cobrada em dobro", "a fatura 2026-1142 foi cobrada duas vezes no nosso cartão.\n"
              "Podem estornar o segundo pagamento?"),
             ("Não consigo entrar", "desde que troquei a senha ontem, a página de login só recarrega."),
             ("Pedido não entregue", "nosso pedido 4711 de 2 de novembro ainda não chegou. Onde está o pacote?"))),
    Lang("tr", ("Ayşe Yılmaz", "Mehmet Demir", "Zeynep Kaya"), "sirket.test", "Merhaba,", "Saygılarımla,",
         "Ynt:", "{date} tarihinde {who} şunu yazdı:", "iPhone'umdan gönderildi", (
             ("Fatura iki kez tahsil edildi", "2026-1142 numaralı fatura kartımızdan iki kez çekildi.\n"
              "İkinci ödemeyi iade edebilir misiniz?"),
             ("Giriş yapamıyorum", "dün şifremi değiştirdiğimden beri giriş sayfası sadece yenileniyor."),
             ("Sipariş gelmedi", "2 Kasım tarihli 4711 numaralı siparişimiz hâlâ gelmedi."))),
    Lang("ja", ("佐藤 花子", "鈴木 一郎", "高橋 美咲"), "kaisha.test", "お世話になっております。",
         "よろしくお願いいたします。", "Re:", "{date} {who} のメール:", "iPhoneから送信", (
             ("請求が二重に引き落とされました", "請求書 2026-1142 の金額がカードから二回引き落とされています。\n"
              "二回目の支払いを返金していただけますか。"),
             ("ログインできません", "昨日パスワードを変更してから、ログイン画面が再読み込みされるだけです。"),
             ("CSV出力について", "顧客一覧をCSVに出力すると、電話番号の列が空になります。"))),
    Lang("zh", ("王芳", "李伟", "张敏"), "gongsi.test", "您好，", "谢谢！", "回复：", "{who} 于 {date} 写道：",
         "从我的iPhone发送", (
             ("发票被重复扣款", "发票 2026-1142 在我们的信用卡上被扣了两次。\n请退还第二笔付款。"),
             ("无法登录", "昨天修改密码后，登录页面一直刷新，无法进入。"),
             ("订单还没到", "我们11月2日的订单 4711 至今没有送到，请帮忙查一下包裹在哪里。"))),
    Lang("ko", ("김민지", "이준호", "박서연"), "hoesa.test", "안녕하세요,", "감사합니다.", "RE:",
         "{date}, {who}님이 작성:", "iPhone에서 보냄", (
             ("청구서가 두 번 결제되었습니다", "청구서 2026-1142가 카드에서 두 번 결제되었습니다.\n"
              "두 번째 결제를 환불해 주시겠어요?"),
             ("로그인이 안 됩니다", "어제 비밀번호를 바꾼 뒤로 로그인 페이지가 계속 새로고침됩니다."),
             ("주문이 도착하지 않았습니다", "11월 2일에 주문한 4711번 주문이 아직 도착하지 않았습니다."))),
]

ACK_TEXT = "Hello,\nwe received your request and will answer soon.\nExample Support"
START = datetime(2026, 11, 2, 8, 0, tzinfo=timezone(timedelta(hours=1)))


@dataclass
class Mail:
    """One mail to write: who, what, and whether it answers the desk's acknowledgement."""

    n: int
    lang: Lang
    name: str
    address: str
    subject: str
    topic: str  # the subject without prefix and case tag
    body: str  # the customer's text, greeting to signature
    reply_to_case: int | None
    date: datetime

    @property
    def quote_header(self) -> str:
        return self.lang.wrote.format(date=format_datetime(self.date - timedelta(hours=3)),
                                      who="Example Support <support@example.com>")

    @property
    def msgid_seed(self) -> str:
        return hashlib.sha256(f"{self.n}{self.address}".encode()).hexdigest()


def _qp(text: str, charset: str = "utf-8") -> str:
    return quopri.encodestring(text.replace("\n", "\r\n").encode(charset)).decode("ascii").replace("\r\n", "\n")


def _b64(text: str) -> str:
    data = base64.b64encode(text.replace("\n", "\r\n").encode("utf-8")).decode()
    return "\n".join(data[i:i + 76] for i in range(0, len(data), 76))


def _html(text: str, wrapper: str = "div") -> str:
    import html as h
    return "".join(f"<{wrapper}>{h.escape(line) or '<br>'}</{wrapper}>" for line in text.split("\n"))


def _addr(name: str, address: str) -> str:
    if name.isascii() and "," not in name:
        return f"{name} <{address}>"
    return f"{Header(name, 'utf-8').encode()} <{address}>"


def _subject(m: Mail) -> str:
    return Header(m.subject, "utf-8", maxlinelen=76).encode() if not m.subject.isascii() else m.subject


def _thread_headers(m: Mail) -> list[str]:
    if m.reply_to_case is None:
        return []
    ack = f"<ack-{m.reply_to_case}-{m.msgid_seed[:8]}@support.example.com>"
    return [f"In-Reply-To: {ack}", f"References: {ack}"]


def _quoted(m: Mail, style: str = ">") -> str:
    if m.reply_to_case is None:
        return ""
    if style == ">":
        return "\n\n" + m.quote_header + "\n" + "\n".join("> " + line for line in ACK_TEXT.split("\n")) + "\n"
    # Outlook's header block, no quote marks
    return ("\n\n________________________________\nFrom: Example Support <support@example.com>\n"
            f"Sent: {format_datetime(m.date - timedelta(hours=3))}\nTo: {m.name} <{m.address}>\n"
            f"Subject: [#{m.reply_to_case}] {m.topic}\n\n{ACK_TEXT}\n")


def _alternative(boundary: str, plain: str, html: str, cte: str = "quoted-printable",
                 charset: str = "UTF-8") -> str:
    enc = _qp if cte == "quoted-printable" else _b64
    return (f"--{boundary}\nContent-Type: text/plain; charset=\"{charset}\"\nContent-Transfer-Encoding: {cte}\n\n"
            f"{enc(plain)}\n\n--{boundary}\nContent-Type: text/html; charset=\"{charset}\"\n"
            f"Content-Transfer-Encoding: {cte}\n\n{enc(html)}\n\n--{boundary}--\n")


# --- the clients ------------------------------------------------------------------------------

def gmail(m: Mail) -> str:
    b = "000000000000" + m.msgid_seed[:16]
    plain = m.body + _quoted(m)
    html = f'<div dir="ltr">{_html(m.body)}</div>'
    if m.reply_to_case is not None:
        html += (f'<br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">{m.quote_header}<br></div>'
                 f'<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px solid '
                 f'rgb(204,204,204);padding-left:1ex">{_html(ACK_TEXT)}</blockquote></div>')
    return "\n".join([
        "MIME-Version: 1.0", f"Date: {format_datetime(m.date)}", *_thread_headers(m),
        f"Message-ID: <CA+{m.msgid_seed[:40]}@mail.gmail.com>", f"Subject: {_subject(m)}",
        f"From: {_addr(m.name, m.address)}", "To: support@example.com",
        f'Content-Type: multipart/alternative; boundary="{b}"', "", _alternative(b, plain, html, "quoted-printable")])


def gmail_android(m: Mail) -> str:
    b = "000000000000" + m.msgid_seed[16:32]
    plain = m.body + _quoted(m)
    return "\n".join([
        "MIME-Version: 1.0", f"Date: {format_datetime(m.date)}", *_thread_headers(m),
        f"Message-ID: <CAH{m.msgid_seed[:38]}@mail.gmail.com>", f"Subject: {_subject(m)}",
        f"From: {_addr(m.name, m.address)}", "To: Example Support <support@example.com>",
        f'Content-Type: multipart/alternative; boundary="{b}"', "",
        _alternative(b, plain, f'<div dir="auto">{_html(m.body)}</div>', "base64")])


def outlook_exchange(m: Mail) -> str:
    b = f"_000_{m.msgid_seed[:30].upper()}namprd04prodoutlook_"
    plain = m.body + _quoted(m, "outlook")
    html = ('<html xmlns:o="urn:schemas-microsoft-com:office:office"><head><meta http-equiv="Content-Type" '
            'content="text/html; charset=utf-8"></head><body lang="EN-US"><div class="WordSection1">'
            + _html(m.body, 'p class="MsoNormal"').replace("</p class=\"MsoNormal\">", "</p>")
            + "</div></body></html>")
    return "\n".join([
        f"From: {_addr(m.name, m.address)}", "To: Support <support@example.com>", f"Subject: {_subject(m)}",
        f"Thread-Topic: {_subject(m)}", f"Thread-Index: AQH{m.msgid_seed[:20]}==", f"Date: {format_datetime(m.date)}",
        f"Message-ID: <{m.msgid_seed[:32].upper()}@DM6PR04MB6012.namprd04.prod.outlook.example>",
        *_thread_headers(m), f"Accept-Language: {m.lang.code}-{m.lang.code.upper()}, en-US",
        f"Content-Language: {m.lang.code}-{m.lang.code.upper()}", "X-MS-Has-Attach:", "X-MS-TNEF-Correlator:",
        f'Content-Type: multipart/alternative;\n\tboundary="{b}"', "MIME-Version: 1.0", "",
        _alternative(b, plain, html, "base64" if not m.body.isascii() else "quoted-printable")])


def outlook_com(m: Mail) -> str:
    b = f"_000_{m.msgid_seed[:24]}PR3P193MB_"
    return "\n".join([
        f"From: {_addr(m.name, m.address)}", "To: \"support@example.com\" <support@example.com>",
        f"Subject: {_subject(m)}", f"Date: {format_datetime(m.date)}",
        f"Message-ID: <PR3P193MB{m.msgid_seed[:20].upper()}@PR3P193MB0891.EURP193.PROD.OUTLOOK.EXAMPLE>",
        *_thread_headers(m), "x-ms-exchange-messagesentrepresentingtype: 1",
        f'Content-Type: multipart/alternative;\n\tboundary="{b}"', "MIME-Version: 1.0", "",
        _alternative(b, m.body + _quoted(m, "outlook"),
                     '<html><body><div style="font-family: Calibri, Arial, Helvetica, sans-serif;">'
                     + _html(m.body) + "</div></body></html>")])


def apple_mail(m: Mail) -> str:
    return "\n".join([
        f"From: {_addr(m.name, m.address)}", "Content-Type: text/plain;\n\tcharset=utf-8",
        "Content-Transfer-Encoding: quoted-printable", "Mime-Version: 1.0 (Mac OS X Mail 16.0 \\(3774.600.62\\))",
        f"Subject: {_subject(m)}", f"Date: {format_datetime(m.date)}", *_thread_headers(m),
        "To: support@example.com",
        f"Message-Id: <{m.msgid_seed[:8].upper()}-{m.msgid_seed[8:12].upper()}-4A1B-9C2D-"
        f"{m.msgid_seed[12:24].upper()}@{m.lang.domain}>", "X-Mailer: Apple Mail (2.3774.600.62)", "",
        _qp(m.body + _quoted(m))])


def iphone(m: Mail) -> str:
    b = f"Apple-Mail-{m.msgid_seed[:8].upper()}-{m.msgid_seed[8:12].upper()}"
    plain = m.body + "\n\n" + m.lang.mobile + _quoted(m)
    html = f'<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8"></head>' \
        f'<body dir="auto">{_html(m.body)}<div dir="ltr">{m.lang.mobile}</div></body></html>'
    return "\n".join([
        "Content-Type: multipart/alternative; boundary=" + b, "Content-Transfer-Encoding: 7bit",
        f"From: {_addr(m.name, m.address)}", "Mime-Version: 1.0 (1.0)", f"Date: {format_datetime(m.date)}",
        f"Subject: {_subject(m)}", f"Message-Id: <{m.msgid_seed[:36].upper()}@{m.lang.domain}>",
        *_thread_headers(m), "To: support@example.com", "X-Mailer: iPhone Mail (22B91)", "",
        _alternative(b, plain, html)])


def thunderbird(m: Mail) -> str:
    return "\n".join([
        f"Message-ID: <{m.msgid_seed[:8]}-{m.msgid_seed[8:12]}-{m.msgid_seed[12:16]}-{m.msgid_seed[16:28]}"
        f"@{m.lang.domain}>", f"Date: {format_datetime(m.date)}", "MIME-Version: 1.0",
        "User-Agent: Mozilla Thunderbird", f"Content-Language: {m.lang.code}", "To: support@example.com",
        f"From: {_addr(m.name, m.address)}", f"Subject: {_subject(m)}", *_thread_headers(m),
        "Content-Type: text/plain; charset=UTF-8; format=flowed", "Content-Transfer-Encoding: 8bit", "",
        m.body + _quoted(m)])


def samsung(m: Mail) -> str:
    b = f"--_com.samsung.android.email_{m.msgid_seed[:15]}"
    plain = m.body + "\n\n\nSent from my Galaxy" + _quoted(m)
    return "\n".join([
        f"From: {_addr(m.name, m.address)}", f"Date: {format_datetime(m.date)}", f"Subject: {_subject(m)}",
        "To: support@example.com", *_thread_headers(m), f"Message-ID: <{m.msgid_seed[:20]}@email.android.com>",
        "MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{b}"', "",
        _alternative(b, plain, f'<html><body><div dir="auto">{_html(m.body)}</div></body></html>', "base64")])


def yahoo(m: Mail) -> str:
    b = f"----=_Part_{int(m.msgid_seed[:6], 16)}_{int(m.msgid_seed[6:12], 16)}.1763110000000"
    return "\n".join([
        f"Date: {format_datetime(m.date)}", f"From: {_addr(m.name, m.address)}",
        "To: \"support@example.com\" <support@example.com>",
        f"Message-ID: <{int(m.msgid_seed[:12], 16)}.{int(m.msgid_seed[12:18], 16)}@mail.yahoo.example>",
        *_thread_headers(m), f"Subject: {_subject(m)}", "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; \n\tboundary="{b}"', "X-Mailer: WebService/1.1.24652 YMailNorrin", "",
        _alternative(b, m.body + _quoted(m),
                     f'<html><head></head><body><div class="ydp3f0e2b1eyahoo-style-wrap">{_html(m.body)}'
                     "</div></body></html>")])


def gmx(m: Mail) -> str:
    quoted = ""
    if m.reply_to_case is not None:
        quoted = (f"\n\n \n\nGesendet: {format_datetime(m.date - timedelta(hours=3))}\n"
                  "Von: \"Example Support\" <support@example.com>\n"
                  f"An: {m.address}\nBetreff: [#{m.reply_to_case}] {m.topic}\n{ACK_TEXT}\n")
    b = f"=_{m.msgid_seed[:24]}"
    return "\n".join([
        "MIME-Version: 1.0", f"Message-ID: <trinity-{m.msgid_seed[:8]}-{m.msgid_seed[8:12]}-"
        f"{m.msgid_seed[12:28]}-1763110000000@3c-app-gmx-bap12>", f"From: {_addr(m.name, m.address)}",
        "To: support@example.com", f"Subject: {_subject(m)}", *_thread_headers(m),
        f'Content-Type: multipart/alternative; boundary="{b}"', f"Date: {format_datetime(m.date)}",
        "Importance: normal", "Sensitivity: Normal", "", _alternative(
            b, m.body + quoted, f'<html><head></head><body><div style="font-family: Verdana;font-size: 12.0px;">'
            f"{_html(m.body)}</div></body></html>")])


def roundcube(m: Mail) -> str:
    return "\n".join([
        "MIME-Version: 1.0", f"Date: {format_datetime(m.date)}", f"From: {_addr(m.name, m.address)}",
        "To: support@example.com", f"Subject: {_subject(m)}", *_thread_headers(m),
        f"Message-ID: <{m.msgid_seed[:32]}@{m.lang.domain}>", "X-Sender: " + m.address,
        "User-Agent: Roundcube Webmail/1.6.9", "Content-Type: text/plain; charset=UTF-8; format=flowed",
        "Content-Transfer-Encoding: 8bit", "", m.body + _quoted(m)])


def mailru(m: Mail) -> str:
    b = f"--ALT--{m.msgid_seed[:32].upper()}1763110000"
    quoted = ""
    if m.reply_to_case is not None:
        quoted = ("\n\n \n>Пятница, 20 ноября 2026, 10:00 +03:00 от Example Support <support@example.com>:\n>\n"
                  + "\n".join(">" + line for line in ACK_TEXT.split("\n")) + "\n")
    return "\n".join([
        f"From: {_addr(m.name, m.address)}", "To: support@example.com", f"Subject: {_subject(m)}",
        "MIME-Version: 1.0", "X-Mailer: Mail.Ru Mailer 1.0", f"Date: {format_datetime(m.date)}",
        f"Message-ID: <{int(m.msgid_seed[:12], 16)}@f{int(m.msgid_seed[12:14], 16)}.i.mail.ru>",
        *_thread_headers(m), f'Content-Type: multipart/alternative;\n\tboundary="{b}"', "",
        _alternative(b, m.body + quoted, f"<HTML><BODY><div>{_html(m.body)}</div></BODY></HTML>", "base64")])


def yandex(m: Mail) -> str:
    quoted = ""
    if m.reply_to_case is not None:
        quoted = ("\n\n20.11.2026, 10:00, \"Example Support\" <support@example.com>:\n"
                  + "\n".join("> " + line for line in ACK_TEXT.split("\n")) + "\n")
    return "\n".join([
        "X-Yandex-Spam: 1", f"From: {_addr(m.name, m.address)}", "To: support@example.com",
        f"Subject: {_subject(m)}", "MIME-Version: 1.0", "X-Mailer: Yamail [ http://yandex.ru ] 5.0",
        f"Date: {format_datetime(m.date)}", f"Message-Id: <{int(m.msgid_seed[:14], 16)}@mail.yandex.example>",
        *_thread_headers(m), "Content-Transfer-Encoding: 8bit", "Content-Type: text/plain; charset=utf-8", "",
        m.body + quoted])


CLIENTS: list[tuple[str, Callable[[Mail], str]]] = [
    ("gmail", gmail), ("gmail-android", gmail_android), ("outlook-exchange", outlook_exchange),
    ("outlook-com", outlook_com), ("apple-mail", apple_mail), ("iphone", iphone), ("thunderbird", thunderbird),
    ("samsung", samsung), ("yahoo", yahoo), ("gmx", gmx), ("roundcube", roundcube), ("mailru", mailru),
    ("yandex", yandex),
]


def build(n: int, rng: random.Random) -> tuple[str, str]:
    """The n-th mail: (file name, the mail with LF line ends)."""
    lang = LANGS[n % len(LANGS)]
    subject, text = lang.topics[(n // len(LANGS)) % len(lang.topics)]
    client_name, client = CLIENTS[(n * 5 + n // len(LANGS)) % len(CLIENTS)]
    name = lang.names[n % len(lang.names)]
    local = name.split()[0].lower() if name.isascii() else f"user{n}"
    address = f"{local}.{n}@{lang.domain}"
    case = 100 + n if n % 2 else None
    topic = subject
    if case is not None:
        subject = f"{lang.reply_prefix} [#{case}] {subject}"
    body = f"{lang.hello}\n\n{text}\n\n{lang.bye}\n{name}"
    date = START + timedelta(hours=n * 3, minutes=rng.randrange(60))
    mail = Mail(n, lang, name, address, subject, topic, body, case, date)
    return f"gen-{n:03d}-{client_name}-{lang.code}.eml", client(mail)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("gen-*.eml"):
        old.unlink()
    rng = random.Random(21)
    for n in range(COUNT):
        name, text = build(n, rng)
        (OUT / name).write_bytes(text.replace("\r\n", "\n").encode("utf-8"))
    print(f"wrote {COUNT} mails to {OUT}")


if __name__ == "__main__":
    main()
