#!/usr/bin/python3
"""Writes the golden corpus tests/data/*.eml and tests/data/expected/*.json.

Each case states what transform must decide (recipients, fallback reasons,
text that must / must not be in the outgoing body).  The attachments part of
each expectation is not written by hand: it is what Python's email package
(the lenient yardstick of DESIGN.md §4.2 "Leniency") decodes from the same bytes,
so a difference between GMime-based transform and Python shows up as a
failing golden test.  Embedded messages (message/rfc822) have no decoded
payload in Python; their expectation is the exact bytes embedded.

Run: /usr/bin/python3 tests/data/make_corpus.py   (deterministic output)
"""
import base64
import email
import email.policy
import hashlib
import json
import os
import quopri
import random
import re

HERE = os.path.dirname(os.path.abspath(__file__))
M = ":Email_Rxers_Code:"
BLOCKED = {"exe", "scr", "bat", "cmd", "com", "pif", "vbs", "js", "jar", "msi", "ps1"}


def blob(seed, n):
    return random.Random(seed).randbytes(n)


def b64(data, width=76):
    s = base64.b64encode(data).decode()
    return "\r\n".join(s[i:i + width] for i in range(0, len(s), width))


def hdr(subject, extra=""):
    return ("From: Sensor 7 <sensor7@devices.example>\r\n"
            "To: alerts@iot.localhost\r\n"
            "Subject: %s\r\n"
            "Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n"
            "Message-ID: <%s@devices.example>\r\n"
            "MIME-Version: 1.0\r\n%s") % (subject, int(hashlib.md5(subject.encode()).hexdigest()[:8], 16), extra)


def mixed(subject, parts, boundary="BOUNDARY-1", close=True):
    s = hdr(subject, 'Content-Type: multipart/mixed; boundary="%s"\r\n\r\n' % boundary)
    s += "This is a multi-part message in MIME format.\r\n"
    for p in parts:
        s += "\r\n--%s\r\n%s" % (boundary, p)
    if close:
        s += "\r\n--%s--\r\n" % boundary
    else:
        s += "\r\n"
    return s


def text_part(body, ctype="text/plain; charset=utf-8", cte="7bit"):
    return "Content-Type: %s\r\nContent-Transfer-Encoding: %s\r\n\r\n%s" % (ctype, cte, body)


def att_part(name, data, ctype="application/octet-stream", disp=None):
    disp = disp or 'attachment; filename="%s"' % name
    return ("Content-Type: %s; name=\"%s\"\r\nContent-Disposition: %s\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n%s") % (ctype, name, disp, b64(data))


CASES = {}


def case(name, raw, reasons=(), recipients=(), invalid=None, body_has=(), body_not=(M,), sent=None,
         subject=None, embedded=b"", not_python=None):
    """embedded: the exact bytes of the mail's message/rfc822 attachments
    (Python keeps no raw bytes for them).  not_python: {attachment index:
    bytes} where transform knowingly reads the part differently from
    Python; each such case says why."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if isinstance(embedded, str):
        embedded = embedded.encode()
    CASES[name] = dict(raw=raw, reasons=sorted(reasons), recipients=list(recipients), invalid=invalid,
                       body_has=list(body_has), body_not=list(body_not),
                       sent=bool(recipients) if sent is None else sent, subject=subject,
                       embedded=embedded, not_python=not_python or {})


# 1. The reference demo: multipart/mixed, coded list, one base64 attachment.
case("demo", mixed("Demo alert", [
    text_part("Temperature over threshold on unit 7.\r\n%s[a@x.com,b@y.org]%s\r\nRegards, sensor 7\r\n" % (M, M)),
    att_part("report.csv", b"time,temp\r\n" + b"".join(b"%d,%d.5\r\n" % (i, 20 + i % 9) for i in range(200)),
             "text/csv")]),
    recipients=["a@x.com", "b@y.org"], body_has=["Temperature over threshold", "Regards, sensor 7"],
    subject="Demo alert")

# 2. HTML only, the list wrapped in markup and an entity.
case("html_only", hdr("HTML only", "Content-Type: text/html; charset=utf-8\r\n\r\n") +
     "<html><body><p>Pump <b>3</b> stopped.</p><p>%s[<a href=\"mailto:ops@plant.example\">ops@plant.example</a>, "
     "night&#64;plant.example]%s</p></body></html>\r\n" % (M, M),
     recipients=["ops@plant.example", "night@plant.example"], body_has=["Pump 3 stopped."])

# 3. Nested: mixed > alternative(plain, html) + image + zip.
alt = ('Content-Type: multipart/alternative; boundary="ALT"\r\n\r\n--ALT\r\n' +
       text_part("Plain body %s c@x.com %s\r\n" % (M, M)) + "\r\n--ALT\r\n" +
       text_part("<p>HTML body %s d@x.com %s</p>" % (M, M), "text/html; charset=utf-8") + "\r\n--ALT--\r\n")
case("nested_multipart", mixed("Nested", [
    alt, att_part("cam.png", blob("png", 3000), "image/png"), att_part("logs.zip", blob("zip", 9000), "application/zip")]),
    recipients=["c@x.com"], body_has=["Plain body"], body_not=[M, "HTML body"])

# 4. An embedded message (message/rfc822) with its own attachment.
inner = mixed("Inner report", [text_part("inner text\r\n"), att_part("inner.bin", blob("inner", 700))],
              boundary="INNER")
case("rfc822_attachment", mixed("Forwarded", [
    text_part("See the attached mail. %s[e@x.com]%s\r\n" % (M, M)),
    'Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename="original.eml"\r\n\r\n' + inner]),
    recipients=["e@x.com"], body_has=["See the attached mail."], embedded=inner)

# 5. RFC 2231 name with continuations and a charset.
case("rfc2231_continuation", mixed("RFC 2231", [
    text_part("%s f@x.com %s\r\n" % (M, M)),
    "Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
    " filename*0*=UTF-8''Messwerte%%20K%%C3%%BChlraum%%20;\r\n filename*1*=Nord%%20%%E2%%82%%AC.pdf\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\n%s" % b64(blob("pdf", 4000))]),
    recipients=["f@x.com"])

# 6. RFC 2047 encoded name (and subject).
case("rfc2047_name", mixed("=?UTF-8?B?w5xiZXJzaWNodCBNw6RyeiDinIU=?=", [
    text_part("%s[g@x.com]%s\r\n" % (M, M)),
    'Content-Type: text/plain; name="=?UTF-8?Q?Pr=C3=BCfbericht_=E2=84=962.txt?="\r\n'
    'Content-Disposition: attachment; filename="=?UTF-8?Q?Pr=C3=BCfbericht_=E2=84=962.txt?="\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\n%s" % b64("Prüfbericht Nr. 2\r\nalles gut\r\n".encode())]),
    recipients=["g@x.com"], subject="Übersicht März ✅")

# 7. ISO-8859-1 quoted-printable body.
case("latin1_qp", hdr("Latin-1", "Content-Type: text/plain; charset=iso-8859-1\r\n"
                      "Content-Transfer-Encoding: quoted-printable\r\n\r\n") +
     "Temp=E9rature =E9lev=E9e dans la salle =AB nord =BB.\r\n%s[h@x.com]%s\r\n" % (M, M),
     recipients=["h@x.com"], body_has=["Température élevée", "« nord »"])

# 8. windows-1252 8bit body (euro sign, smart quotes).
case("windows1252", hdr("cp1252", "Content-Type: text/plain; charset=windows-1252\r\n"
                        "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() +
     "Cost \u20ac12 \u201cquoted\u201d \u2013 done\r\n".encode("cp1252") +
     ("%s[i@x.com]%s\r\n" % (M, M)).encode(),
     recipients=["i@x.com"], body_has=["Cost €12 “quoted” – done"])

# 9. Shift_JIS body in base64.
sj = ("警報: 温度が高いです。\r\n%s[j@x.com]%s\r\n" % (M, M)).encode("shift_jis")
case("shift_jis", hdr("SJIS", "Content-Type: text/plain; charset=shift_jis\r\n"
                      "Content-Transfer-Encoding: base64\r\n\r\n") + b64(sj) + "\r\n",
     recipients=["j@x.com"], body_has=["警報: 温度が高いです。"])

# 10. QP body with the marker and list split by soft line breaks.
qp_body = "Alarm.\r\n:Email_Rxe=\r\nrs_Code:[k@x.com,=\r\n l@x.com]:Email_Rxers_=\r\nCode:\r\nEnd.\r\n"
case("qp_marker_split", hdr("QP split", "Content-Type: text/plain; charset=us-ascii\r\n"
                            "Content-Transfer-Encoding: quoted-printable\r\n\r\n") + qp_body,
     recipients=["k@x.com", "l@x.com"], body_has=["Alarm.", "End."])

# 11-12. No marker; one marker only.
case("no_marker", mixed("No marker", [text_part("Nothing coded here.\r\n"),
                                       att_part("a.txt", b"hello\r\n", "text/plain")]),
     reasons=["no_recipients"], body_has=["Nothing coded here."], body_not=[])
case("one_marker", hdr("One marker", "Content-Type: text/plain\r\n\r\n") + "Only %s[m@x.com] here\r\n" % M,
     reasons=["no_recipients"], body_not=[])

# 13-14. Some invalid addresses; all invalid.
case("bad_addresses", hdr("Bad addresses", "Content-Type: text/plain\r\n\r\n") +
     "%s[n@x.com, not-an-address, o@@y.org, p@x, q@example.org]%s\r\n" % (M, M),
     reasons=["invalid_recipients"], recipients=["n@x.com", "q@example.org"],
     invalid=["not-an-address", "o@@y.org", "p@x"])
case("all_invalid", hdr("All invalid", "Content-Type: text/plain\r\n\r\n") + "%s[foo, bar@, @baz.com]%s\r\n" % (M, M),
     reasons=["invalid_recipients"], invalid=["foo", "bar@", "@baz.com"], sent=False)

# 15. 51 recipients (limit 50).
case("recipients_51", hdr("51", "Content-Type: text/plain\r\n\r\n") +
     "%s[%s]%s\r\n" % (M, ", ".join("user%02d@x.com" % i for i in range(51)), M),
     reasons=["too_many_recipients"], sent=False, body_not=[])

# 16. Path traversal and control characters in names.
case("path_traversal", mixed("Traversal", [
    text_part("%s[r@x.com]%s\r\n" % (M, M)),
    att_part("../../etc/passwd", b"root:x:0:0\r\n"),
    att_part("..\\\\..\\\\boot.ini", b"[boot]\r\n"),
    'Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=UTF-8\'\'evil%0D%0ABcc%3A%20x%40y.org%00.txt\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\n" + b64(b"crlf name\r\n")]),
    recipients=["r@x.com"])

# 17. Nesting deeper than the limit (20).
deep = text_part("%s[s@x.com]%s\r\n" % (M, M))
for d in range(25):
    deep = 'Content-Type: multipart/mixed; boundary="D%d"\r\n\r\n--D%d\r\n%s\r\n--D%d--\r\n' % (d, d, deep, d)
case("deep_nesting", hdr("Deep", "") + deep, reasons=["unparseable"], sent=False, body_not=[])

# 17b. 5000 levels, "Content-Type :" spelled loosely: stopped before GMime's
# recursive parser sees it.
deep = "Content-Type : text/plain\r\n\r\n%s[s@x.com]%s\r\n" % (M, M)
for d in range(5000):
    deep = 'Content-Type : multipart/mixed; boundary="L%d"\r\n\r\n--L%d\r\n%s\r\n--L%d--\r\n' % (d, d, deep, d)
case("deep_nesting_5000", hdr("Deeper", "") + deep, reasons=["unparseable"], sent=False, body_not=[])

# 18. More parts than the limit (500).
case("many_parts", mixed("Many", [text_part("%s[t@x.com]%s\r\n" % (M, M))] +
                         [text_part("p%d\r\n" % i) for i in range(600)]),
     reasons=["unparseable"], sent=False, body_not=[])

# 19. A 1 MB header.
case("huge_header", hdr("Huge", "X-Junk: " + "\r\n ".join("x" * 70 for _ in range(15000)) +
                        "\r\nContent-Type: text/plain\r\n\r\n") + "%s[u@x.com]%s\r\n" % (M, M),
     reasons=["unparseable"], sent=False, body_not=[])

# 20. Missing closing boundary: the last attachment runs to the end.
case("missing_boundary", mixed("No close", [text_part("%s[v@x.com]%s\r\n" % (M, M)),
                                            att_part("data.bin", blob("nb", 2000))], close=False),
     recipients=["v@x.com"])

# 21. A part's header runs straight into its base64 (no blank line).
case("header_into_base64", mixed("No blank", [
    text_part("%s[w@x.com]%s\r\n" % (M, M)),
    'Content-Type: application/octet-stream; name="sensor.bin"\r\nContent-Disposition: attachment; filename="sensor.bin"\r\n'
    "Content-Transfer-Encoding: base64\r\n" + b64(blob("nob", 1500))]),
    recipients=["w@x.com"])

# 22. Base64 without its final padding.
case("bad_base64_padding", mixed("Padding", [
    text_part("%s[y@x.com]%s\r\n" % (M, M)),
    'Content-Type: application/octet-stream; name="pad.bin"\r\nContent-Disposition: attachment; filename="pad.bin"\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\n" + b64(blob("pad", 1001)).rstrip("=")]),
    recipients=["y@x.com"])

# 23. Bare LF line ends throughout.
case("bare_lf", mixed("Bare LF", [text_part("Line one\r\n%s[z@x.com]%s\r\n" % (M, M)),
                                  att_part("lf.bin", blob("lf", 1200))]).replace("\r\n", "\n"),
     recipients=["z@x.com"], body_has=["Line one"])

# 24. uuencoded attachment.
def uuencode(data, name):
    import binascii
    lines = ["begin 644 %s" % name]
    for i in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[i:i + 45]).decode().rstrip("\n"))
    lines += ["`", "end"]
    return "\r\n".join(lines) + "\r\n"
case("uuencode", mixed("UU", [text_part("%s[aa@x.com]%s\r\n" % (M, M)),
                              'Content-Type: application/octet-stream; name="fw.img"\r\n'
                              'Content-Disposition: attachment; filename="fw.img"\r\n'
                              "Content-Transfer-Encoding: x-uuencode\r\n\r\n" + uuencode(blob("uu", 500), "fw.img")]),
     recipients=["aa@x.com"])

# 25. A blocked extension: not linked, the rest is sent.
case("blocked_exe", mixed("Blocked", [text_part("%s[bb@x.com]%s\r\n" % (M, M)),
                                      att_part("update.exe", blob("exe", 800)),
                                      att_part("notes.txt", b"fine\r\n", "text/plain")]),
     reasons=["blocked_attachment"], recipients=["bb@x.com"])

# 26. Duplicates and upper-case domains, separators of every kind.
case("duplicates_case", hdr("Dups", "Content-Type: text/plain\r\n\r\n") +
     "%s\r\n[ Cc@X.COM ;\r\n dd@y.org,\r\n\tCc@x.com\r\n dd@Y.ORG ]\r\n%s\r\n" % (M, M),
     recipients=["Cc@x.com", "dd@y.org"])

# 27. An inline image without a name.
case("inline_image", mixed("Inline", [text_part("%s[ee@x.com]%s\r\n" % (M, M)),
                                      "Content-Type: image/jpeg\r\nContent-Disposition: inline\r\n"
                                      "Content-Transfer-Encoding: base64\r\n\r\n" + b64(blob("jpg", 2500))]),
     recipients=["ee@x.com"])

# 28. Quoted-printable text attachment.
case("qp_attachment", mixed("QP att", [text_part("%s[ff@x.com]%s\r\n" % (M, M)),
                                       'Content-Type: text/csv; charset=utf-8; name="m.csv"\r\n'
                                       'Content-Disposition: attachment; filename="m.csv"\r\n'
                                       "Content-Transfer-Encoding: quoted-printable\r\n\r\n" +
                                       quopri.encodestring("a;b\r\nK\u00fchl;=1\r\n".encode() + b"x" * 120).decode()]),
     recipients=["ff@x.com"])

# 29. A 4 KB file name.
case("long_name", mixed("Long name", [text_part("%s[gg@x.com]%s\r\n" % (M, M)),
                                      att_part("n" * 4000 + ".log", b"long\r\n")]),
     recipients=["gg@x.com"])

# 30. Not a mail at all.
case("garbage", b"\x00\x01\x02binary junk without headers\xff\xfe\r\n", reasons=["unparseable"],
     sent=False, body_not=[])

# 31. CR/LF and quotes in a coded entry never make a header, and an entry that
#     spans a line break is one invalid entry: evil@x.com gets nothing.
case("injection", hdr("Inject\r\n =?UTF-8?Q?x=0D=0ABcc:_evil@x.com?=", "Content-Type: text/plain\r\n\r\n") +
     "%s[\"hh@x.com\r\nBcc: evil@x.com\", ii@x.com]%s\r\n" % (M, M),
     reasons=["invalid_recipients"], recipients=["ii@x.com"], invalid=["hh@x.com?Bcc: evil@x.com"])


# --- MIME fidelity: mails from other parsers' test suites that once stored
# wrong bytes (issue 15), one crafted mail per cause -------------------------

# 32. A forwarded mail whose first headers are Content-* and MIME-Version, and
# which forwards another mail in turn: the stored .eml is the embedded bytes
# exactly, so the nested message/rfc822 stays one.  The innermost boundary has
# the outer one as a prefix.
innermost = ('MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="FWD-2"\r\n'
             "From: meter@plant.example\r\nSubject: reading\r\n\r\n--FWD-2\r\n" +
             text_part("reading 42\r\n") + "\r\n--FWD-2\r\n" + att_part("reading.bin", blob("fwd", 300)) +
             "\r\n--FWD-2--\r\n")
forwarded = ("Content-Type: message/rfc822\r\nContent-Disposition: inline\r\nMIME-Version: 1.0\r\n"
             "From: gateway@plant.example\r\nSubject: Fwd: reading\r\n\r\n" + innermost)
case("forwarded_content_headers_first", mixed("Forwarded twice", [
    text_part("%s[jj@x.com]%s\r\n" % (M, M)),
    'Content-Type: message/rfc822; name="fwd.eml"\r\n\r\n' + forwarded], boundary="FWD"),
    recipients=["jj@x.com"], embedded=forwarded)

# 33. A delivery report whose message/rfc822 part has no headers, only a line
# of text, as DSNs often carry.  (No message/delivery-status part: Python
# reads one as a list of header blocks, transform as an attachment.)
dsn_placeholder = "[original message not included]"
case("dsn_headerless_rfc822", hdr("Undelivered", 'Content-Type: multipart/report; report-type=delivery-status; '
                                  'boundary="DSN"\r\n\r\n') +
     "--DSN\r\n" + text_part("Delivery failed. %s[kk@x.com]%s\r\n" % (M, M)) +
     "\r\n--DSN\r\nContent-Type: message/rfc822\r\n\r\n" + dsn_placeholder + "\r\n--DSN--\r\n",
     recipients=["kk@x.com"], embedded=dsn_placeholder)

# 34. Closing boundaries with more dashes than they should have, each followed
# by text.  Python takes neither for a boundary but stops base64 at its
# padding (seven.bin); transform also ends the part at such a line, so six.bin
# (no padding to stop at) is its 6 bytes, where Python decodes the letters of
# the boundary and the text after it into the attachment.
case("near_miss_close_boundary", mixed("Near miss", [
    text_part("%s[ll@x.com]%s\r\n" % (M, M)),
    'Content-Type: multipart/mixed; boundary="NM-2"\r\n\r\n--NM-2\r\n' + att_part("six.bin", b"abcdef") +
    "\r\n--NM-2-----\r\ntext after the inner near miss\r\n",
    att_part("seven.bin", b"1234567")], boundary="NM", close=False) +
    "--NM-----\r\nThe end of the mail, after a closing boundary with too many dashes.\r\n",
    recipients=["ll@x.com"], not_python={0: b"abcdef"})


# 35. uuencode whose lines lost their trailing spaces in transit (a space
# encodes zero bits, common in zip files): the short lines read as padded.
uu_data = b"".join(blob("uus%d" % i, 40) + b"\0" * (5 + i % 3) for i in range(60))
case("uuencode_stripped_spaces", mixed("UU stripped", [
    text_part("%s[mm@x.com]%s\r\n" % (M, M)),
    'Content-Type: application/zip; name="logs.zip"\r\nContent-Disposition: attachment; filename="logs.zip"\r\n'
    "Content-Transfer-Encoding: x-uuencode\r\n\r\n" +
    "\r\n".join(l.rstrip(" ") for l in uuencode(uu_data, "logs.zip").split("\r\n"))]),
    recipients=["mm@x.com"])

# 36. The closing boundary is the last line, without a line break: the line
# break before it is all the part's, CR included.
case("close_boundary_at_eof", mixed("No final line break", [
    text_part("%s[nn@x.com]%s\r\n" % (M, M)),
    'Content-Type: text/csv; name="readings.csv"\r\nContent-Disposition: attachment; filename="readings.csv"\r\n'
    "Content-Transfer-Encoding: 7bit\r\n\r\ntime,temp\r\n1,20.5"])[:-2],
    recipients=["nn@x.com"])

# 37. "Content-Type: text" without a subtype is text/plain (RFC 2045's
# default for a type it cannot read), its charset parameter still read.
case("text_without_subtype", hdr("No subtype", "Content-Type: text; charset=iso-8859-1\r\n"
                                 "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() +
     "Temp\u00e9rature \u00e9lev\u00e9e.\r\n".encode("latin-1") + ("%s[oo@x.com]%s\r\n" % (M, M)).encode(),
     recipients=["oo@x.com"], body_has=["Température élevée."])

# 38-39. The first header line starts with a blank, as if it continued a
# header before it: read leniently (a header after the blanks is kept;
# Python drops the line), not refused as unparseable.
case("first_header_indented", " " + mixed("Indented first header", [
    text_part("%s[pp@x.com]%s\r\n" % (M, M)), att_part("first.bin", blob("indent", 90))]),
    recipients=["pp@x.com"], subject="Indented first header")
case("first_line_continuation", "\t(continued from nowhere)\r\n" + mixed("Continuation first", [
    text_part("%s[qq@x.com]%s\r\n" % (M, M)), att_part("second.bin", blob("cont", 90))]),
    recipients=["qq@x.com"], subject="Continuation first")

# --- what Python's email package makes of the attachments ---------------

def display_name(raw, fallback):
    if raw is None:
        return fallback
    # Names travel as C strings: a NUL ends them.  RFC 2047 words in a
    # parameter (not allowed, common) are decoded as mail readers do.
    raw = raw.split("\x00")[0]
    if "=?" in raw:
        import email.header
        raw = str(email.header.make_header(email.header.decode_header(raw)))
    base = re.split(r"[/\\]", raw)[-1]
    base = "".join(c for c in base if not (ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f))
    base = base.strip(" .")
    enc = base.encode("utf-8", "replace")
    if len(enc) > 200:
        enc = enc[:200]
        base = enc.decode("utf-8", "ignore")
    return base or fallback


def is_attachment(part):
    if part.get_content_type() == "message/rfc822":
        return True
    if part.is_multipart():
        return False
    if part.get_content_disposition() == "attachment" or part.get_filename():
        return True
    return part.get_content_maintype() != "text"


def python_attachments(raw, embedded):
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    out = []

    def walk(p):
        if p.get_content_type() == "message/rfc822":
            n = len(out) + 1
            name = display_name(p.get_filename(), "attachment-%d.eml" % n)
            if not name.lower().endswith(".eml"):
                name += ".eml"
            data = embedded
            out.append({"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                        "blocked": False})
            return
        if p.is_multipart():
            for c in p.get_payload():
                walk(c)
            return
        if not is_attachment(p):
            return
        n = len(out) + 1
        name = display_name(p.get_filename(), "attachment-%d" % n)
        data = p.get_payload(decode=True) or b""
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        out.append({"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                    "blocked": ext in BLOCKED})
    if msg.is_multipart() or msg.get_content_type() == "message/rfc822":
        walk(msg)
    elif is_attachment(msg):
        walk(msg)
    return out


def expected_attachments(c):
    if "unparseable" in c["reasons"]:
        return []
    atts = python_attachments(c["raw"], c["embedded"])
    for i, data in c["not_python"].items():
        atts[i].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    return atts


def main():
    for name, c in sorted(CASES.items()):
        with open(os.path.join(HERE, name + ".eml"), "wb") as f:
            f.write(c["raw"])
        atts = expected_attachments(c)
        exp = {k: c[k] for k in ("reasons", "recipients", "body_has", "body_not", "sent")}
        if c["invalid"] is not None:
            exp["invalid"] = c["invalid"]
        if c["subject"] is not None:
            exp["subject"] = c["subject"]
        exp["attachments"] = atts
        with open(os.path.join(HERE, "expected", name + ".json"), "w") as f:
            json.dump(exp, f, indent=1, ensure_ascii=False, sort_keys=True)
            f.write("\n")
    print("%d cases" % len(CASES))


if __name__ == "__main__":
    main()
