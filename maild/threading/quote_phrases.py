"""Words mail clients put around quoted history, as data for threading.reply.

reply.py recognises history by its shape first (a line naming a date or an address and
ending in ':', a block of `Label: value` lines, a separator line); these lists only make a
shape trusted where the shape alone is weak. Adding a language is adding words here.
Matching is case-insensitive; a phrase is a regular-expression fragment.
"""

from __future__ import annotations

# The verb of an attribution line ("On … wrote:", "Am … schrieb …:", "… 写道："), anywhere in
# the line: some languages put it before the name, some after.
ATTRIBUTION_VERBS: tuple[str, ...] = (
    r"wrote",  # English
    r"schrieb",  # German
    r"a\s+écrit",  # French
    r"escribió",  # Spanish
    r"ha\s+scritto",  # Italian
    r"escreveu",  # Portuguese
    r"schreef",  # Dutch
    r"het\s+volgende\s+geschreven",  # Dutch, Apple Mail
    r"skrev",  # Swedish, Norwegian, Danish
    r"kirjoitti",  # Finnish
    r"napisał(?:a|\(a\))?",  # Polish
    r"napisała",
    r"pisze",  # Polish, Thunderbird
    r"wiadomość\s+napisana\s+przez",  # Polish, Apple Mail
    r"napsal(?:a|\(a\))?",  # Czech
    r"написал(?:а|\(а\))?",  # Russian
    r"пишет",  # Russian, Thunderbird
    r"yazdı",  # Turkish
    r"şunları\s+yazdı",
    r"írta",  # Hungarian
    r"が書きました",  # Japanese
    r"のメール",  # Japanese, Apple Mail
    r"写道",  # Chinese (simplified)
    r"寫道",  # Chinese (traditional)
    r"님이\s*작성",  # Korean
)

# Header labels of a quoted mail (Outlook, Lotus, Zimbra, mobile clients), by role. A block
# of `Label: value` lines is history when its labels cover three roles.
FROM_LABELS: tuple[str, ...] = (
    "from", "von", "de", "da", "van", "od", "от", "från", "fra", "frá", "lähettäjä", "kimden",
    "feladó", "差出人", "发件人", "寄件者", "寄件人", "보낸 사람", "αποστολέας", "expéditeur", "remetente",
)
DATE_LABELS: tuple[str, ...] = (
    "sent", "date", "gesendet", "datum", "envoyé", "envoyé le", "enviado", "enviado el", "enviada em",
    "enviado em", "fecha", "data", "inviato", "verzonden", "wysłano", "wysłane", "data wysłania", "skickat",
    "sendt", "lähetetty", "päivämäärä", "gönderildi", "tarih", "elküldve", "dátum", "отправлено", "дата",
    "odesláno", "送信日時", "日付", "发送时间", "日期", "寄件日期", "보낸 날짜", "날짜", "message du", "sent on",
)
TO_LABELS: tuple[str, ...] = (
    "to", "an", "à", "a", "para", "aan", "do", "till", "til", "vastaanottaja", "kime", "címzett", "кому",
    "komu", "宛先", "收件人", "收件者", "받는 사람", "cc", "kopie", "копия", "kopia", "kopio", "bilgi",
    "másolat", "抄送", "참조",
)
SUBJECT_LABELS: tuple[str, ...] = (
    "subject", "betreff", "objet", "asunto", "oggetto", "onderwerp", "temat", "assunto", "ämne", "emne",
    "aihe", "konu", "tárgy", "тема", "předmět", "件名", "主题", "主旨", "제목", "sujet",
)

# Separator lines of Outlook and mobile clients ("-----Original Message-----"); a line of
# dashes around any short text also counts when a header block follows it.
ORIGINAL_MESSAGE: tuple[str, ...] = (
    "original message", "ursprüngliche nachricht", "původní zpráva", "исходное сообщение",
    "message d'origine", "mensaje original", "oorspronkelijk bericht", "messaggio originale",
    "mensagem original", "wiadomość oryginalna", "ursprungligt meddelande", "alkuperäinen viesti",
    "oprindelig meddelelse", "opprinnelig melding", "orijinal ileti", "eredeti üzenet", "原始邮件",
    "元のメッセージ", "원본 메시지", "pôvodná správa",
)

# A forwarded message is content, never history.
FORWARD_SEPARATORS: tuple[str, ...] = (
    "forwarded message", "weitergeleitete nachricht", "пересылаемое сообщение", "přeposlaná zpráva",
    "message transféré", "mensaje reenviado", "doorgestuurd bericht", "messaggio inoltrato",
    "mensagem encaminhada", "wiadomość przekazana", "vidarebefordrat meddelande", "välitetty viesti",
    "videresendt meddelelse", "videresendt melding", "iletilen ileti", "továbbított üzenet",
    "转发的邮件", "転送されたメッセージ", "전달된 메시지",
)
FORWARD_LEADS: tuple[str, ...] = (
    "begin forwarded message", "anfang der weitergeleiteten nachricht", "début du message réexpédié",
    "inicio del mensaje reenviado", "начало переадресованного сообщения", "začátek přeposílané zprávy",
    "inizio messaggio inoltrato", "begin doorgestuurd bericht", "início da mensagem reencaminhada",
)

# Mobile and webmail taglines: a line that is one of these ends the new text. Each is a
# pattern for the whole line (trailing "<url>" and a full stop allowed).
TAGLINES: tuple[str, ...] = (
    r"sent from my \S.{0,60}", r"sent from (?:yahoo mail|aol|mail|outlook|proton ?mail|gmail|samsung)\b.{0,60}",
    r"sent (?:via|with|using) .{1,60}", r"get outlook for (?:ios|android)\b.{0,40}",
    r"von meinem .{1,40} gesendet", r"gesendet (?:von|mit|vom|über) .{1,60}",
    r"envoyé (?:de|depuis|à partir de) (?:mon|ma) .{1,60}", r"envoyé avec .{1,60}",
    r"enviado (?:desde|con) (?:mi )?.{1,60}", r"enviado (?:do|de|a partir do) (?:meu |minha )?.{1,60}",
    r"inviato da .{1,60}", r"inviato dal mio .{1,60}",
    r"(?:verstuurd|verzonden) (?:vanaf|van|met) .{1,60}",
    r"skickat från .{1,60}", r"sendt fra .{1,60}", r"lähetetty \S.{0,60}",
    r"wysłane z .{1,60}", r"wysłano z .{1,60}", r"odesláno z .{1,60}", r"posláno z .{1,60}",
    r"отправлено (?:с|из|через) .{1,60}", r"\S.{0,40} gönderildi", r"\S.{0,40} küldve",
    r"\S.{0,30}から送信", r"发自我的.{1,30}", r"來自我的.{1,30}", r"从我的.{1,30}发送", r"從我的.{1,30}傳送",
    r"\S.{0,30}에서 보냄",
)
