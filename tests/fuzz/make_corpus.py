#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer harnesses into tests/fuzz/corpus/.

    tests/fuzz/make_corpus.py          (re)writes every corpus/<harness>/

Seeds come from tests/data (mails, DSN and ARF reports), the SMTP dialogues
of tests/integration (test_ingest*.py) and requests written here.  Each
file's name says what it is; the first bytes of some inputs are the
harness's switches (see the harness's header comment).  The committed
corpus is this script's output: run it again after changing it.

Inputs the harnesses would sign themselves use the keys in the harnesses
(tests/fuzz/tokens.c, http_routes.c): those keys exist only for fuzzing.
"""
import base64
import hashlib
import hmac
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")

# transform: mails over this size stay out of the corpus (the fuzzer's
# max_len follows the largest seed, and a large one slows every run).
MAX_MAIL = 64 * 1024


def write(harness, name, data):
    d = os.path.join(OUT, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- smtp_session: switches byte, chunking seed byte, dialogue ----------

EHLO = b"EHLO client.test\r\n"
ENV = b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<alerts@iot.localhost>\r\nDATA\r\n"
PLAIN_OK = base64.b64encode(b"\0device\0secret")
SMUGGLE = (b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<alerts@iot.localhost>\r\nDATA\r\n"
           b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n")

DIALOGUES = {
    "basic": EHLO + ENV + b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n",
    "helo": b"HELO client.test\r\n" + ENV + b"a\r\n.\r\n",
    "two_messages": EHLO + ENV + b"a\r\n.\r\n" + ENV + b"b\r\n.\r\n",
    "dot_stuffing": EHLO + ENV + b"..x\r\n...\r\n.\r\n",
    "bare_lf_body": EHLO + ENV + b"Subject: lf\nX-A: 1\n\nline1\nline2\r\n.\r\nQUIT\r\n",
    "bare_cr_body": EHLO + ENV + b"a\rb\r\n.\r\n",
    "size_param": EHLO + b"MAIL FROM:<dev@example.com> SIZE=100 BODY=8BITMIME\r\n"
                         b"RCPT TO:<alerts@iot.localhost>\r\nDATA\r\nx\r\n.\r\n",
    "size_too_big": EHLO + b"MAIL FROM:<dev@example.com> SIZE=99999999\r\n",
    "null_sender_bounce": EHLO + b"MAIL FROM:<>\r\nRCPT TO:<bounce+abc@iot.localhost>\r\nDATA\r\nz\r\n.\r\n",
    "unsubscribe": EHLO + b"MAIL FROM:<a@example.com>\r\n"
                          b"RCPT TO:<unsubscribe+AAAA.BBBB@iot.localhost>\r\nDATA\r\nx\r\n.\r\n",
    "relay_probe": EHLO + b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<someone@gmail.example>\r\n"
                          b"RCPT TO:<nobody@iot.localhost>\r\nRCPT TO:<blocked@iot.localhost>\r\n"
                          b"RCPT TO:<alerts@iot.localhost>\r\n",
    "require_tls": EHLO + b"MAIL FROM:<a@sensors.example>\r\nRCPT TO:<secure@iot.localhost>\r\nRSET\r\n",
    "rule_max_size": EHLO + b"MAIL FROM:<a@example.com>\r\nRCPT TO:<small@iot.localhost>\r\nDATA\r\n"
                            + b"y" * 150 + b"\r\n.\r\n",
    "starttls_pipelined": EHLO + b"STARTTLS\r\nRSET\r\n" + EHLO + ENV + b"x\r\n.\r\n",
    "auth_plain": EHLO + b"AUTH PLAIN " + PLAIN_OK + b"\r\n" + ENV + b"x\r\n.\r\n",
    "auth_plain_two_steps": EHLO + b"AUTH PLAIN\r\n" + PLAIN_OK + b"\r\n",
    "auth_login": EHLO + b"AUTH LOGIN\r\nZGV2aWNl\r\nc2VjcmV0\r\n" + ENV + b"x\r\n.\r\n",
    "auth_busy": EHLO + b"AUTH PLAIN " + base64.b64encode(b"\0busy\0x") + b"\r\nNOOP\r\n",
    "auth_cancel": EHLO + b"AUTH LOGIN\r\n*\r\nAUTH CRAM-MD5\r\n",
    "junk": EHLO + b"NOOP\r\nNOOP\r\nRSET\r\nVRFY root\r\nHELP\r\nEXPN list\r\nNOOP\r\nQUIT\r\n",
    "errors": b"A\r\nB\r\nC\r\nD\r\nE\r\nNOOP\r\n",
    "long_line": b"NOOP " + b"x" * 1100 + b"\r\nNOOP\r\n",
    "nul_in_command": b"EHLO a\x00b\r\nNOOP\r\n",
    "long_body_line": EHLO + ENV + b"Subject: x\r\n\r\n" + b"y" * 1200 + b"\r\n.\r\nNOOP\r\n",
    "big_header": EHLO + ENV + (b"X-Pad: " + b"h" * 100 + b"\r\n") * 5 + b"\r\nbody\r\n.\r\n",
    "too_many_rcpts": EHLO + b"MAIL FROM:<dev@example.com>\r\n"
                             + b"".join(b"RCPT TO:<r%d@dev.iot.localhost>\r\n" % i for i in range(4)),
}
# The smuggling endings test_ingest_security tries, each followed by a
# smuggled second message.
for i, ending in enumerate([b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r",
                            b".\n", b"\r\n.\r\r\n", b"\r\n\x00.\r\n"]):
    DIALOGUES["smuggle_%02d" % i] = EHLO + ENV + b"Subject: first\r\n\r\nbody" + ending + SMUGGLE


def smtp_session():
    # switches: 0x00 default, 0x06 plaintext auth + STARTTLS offered,
    # 0x11 bare LF rejected + deferred answers, 0x2c small limits in TLS
    variants = {"": 0x06, "_reject": 0x11 | 0x06, "_small": 0x2c}
    for name, d in sorted(DIALOGUES.items()):
        for suffix, sw in variants.items():
            if suffix and not (name.startswith("smuggle") or name in ("basic", "auth_login", "two_messages",
                                                                      "bare_lf_body", "big_header")):
                continue
            write("smtp_session", name + suffix, bytes([sw, len(name) & 0xff]) + d)


# ---- transform: switches byte, mail ------------------------------------

def transform():
    for f in sorted(os.listdir(DATA)):
        p = os.path.join(DATA, f)
        if not f.endswith(".eml") or os.path.getsize(p) > MAX_MAIL:
            continue
        with open(p, "rb") as fh:
            mail = fh.read()
        write("transform", f[:-4], b"\x08" + mail)
    # the switches: few recipients, defaults, allow-list, small limits
    with open(os.path.join(DATA, "demo.eml"), "rb") as fh:
        demo = fh.read()
    write("transform", "demo_allow_list_small", b"\x1d" + demo)
    write("transform", "no_marker_defaults", b"\x02Subject: x\r\n\r\nno marker here\r\n")


# ---- recipients: switches byte, text ------------------------------------

M = ":Email_Rxers_Code:"
RECIPIENT_TEXTS = {
    "simple": "Hi\n" + M + "[a@x.com,b@y.org]" + M + "\nbye",
    "separators": M + "[ a@X.COM ;\r\n  b@Y.org , ]" + M,
    "quoted_angle": M + "[<A@x.com>, \"c@z.net\"]" + M,
    "duplicates": M + "[a@x.com,a@X.com,a@x.com]" + M,
    "invalid": M + "[a@x.com,not-an-address,b@@y,c@d]" + M,
    "empty": M + "[]" + M,
    "one_marker": "one " + M + "[a@x.com] only",
    "mailto": M + "[mailto:a@x.com]" + M,
    "group_syntax": M + "[i1@example.org\nBcc: evil@attacker.example, i2@example.org]" + M,
    "quoted_newline": M + "[\"hh@x.com\r\nBcc: evil@x.com\", ii@x.com]" + M,
    "two_lists": "x" + M + "[a@x.com]" + M + "y" + M + "[b@x.com]" + M + "z",
    "many": M + "[" + ",".join("r%d@example.com" % i for i in range(60)) + "]" + M,
}


def recipients():
    for name, text in RECIPIENT_TEXTS.items():
        write("recipients", name, b"\x64" + text.encode())
    write("recipients", "many_max3", b"\x04" + RECIPIENT_TEXTS["many"].encode())
    write("recipients", "html", b"\x65<p>Alarm</p><div>" + M.encode() +
          b"[a@x.com,<b>b@y.org</b>&#44; c&#64;z.net&amp;]" + M.encode() + b"</div><br>&nbsp;end")
    write("recipients", "pattern", b"\x00*.example.com")


# ---- reports: DSN and ARF messages ---------------------------------------

def reports():
    d = os.path.join(DATA, "feedback")
    for f in sorted(os.listdir(d)):
        if f.endswith(".eml"):
            shutil.copyfile(os.path.join(d, f), os.path.join(OUT, "reports", f[:-4]))
    with open(os.path.join(DATA, "dsn_headerless_rfc822.eml"), "rb") as fh:
        write("reports", "dsn_headerless_rfc822", fh.read())


# ---- sns: POST bodies -----------------------------------------------------

ARN = "arn:aws:sns:us-west-2:123456789012:ses-feedback"
CERT = "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-abc.pem"


def ses(kind):
    if kind == "Bounce":
        return {"notificationType": "Bounce", "bounce": {
            "bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": "a@example.com"}, {"emailAddress": "b@example.org"}]},
            "mail": {"messageId": "m1"}}
    if kind == "Complaint":
        return {"notificationType": "Complaint", "complaint": {
            "complaintFeedbackType": "abuse", "complainedRecipients": [{"emailAddress": "c@example.com"}]},
            "mail": {"messageId": "m2"}}
    return {"notificationType": "Delivery", "delivery": {"recipients": ["d@example.com"]},
            "mail": {"messageId": "m3"}}


def sns_message(kind, version="2", mtype="Notification"):
    m = {"Type": mtype, "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn": ARN,
         "Message": json.dumps(ses(kind)), "Timestamp": "2026-11-18T10:00:00.000Z",
         "SignatureVersion": version, "Signature": "AAAA", "SigningCertURL": CERT}
    if mtype == "Notification":
        m["Subject"] = "Amazon SES Email Event Notification"
    else:
        m["SubscribeURL"] = "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=t"
        m["Token"] = "t0k3n"
    return json.dumps(m)


def sns():
    for kind in ("Bounce", "Complaint", "Delivery"):
        write("sns", "notification_" + kind.lower(), sns_message(kind))
    write("sns", "notification_v1", sns_message("Bounce", "1"))
    write("sns", "subscription_confirmation", sns_message("Bounce", "2", "SubscriptionConfirmation"))
    write("sns", "unsubscribe_confirmation", sns_message("Bounce", "2", "UnsubscribeConfirmation"))
    write("sns", "missing_fields", '{"Type":"Notification","Message":"x"}')


# ---- tokens: tokens, base64url, key lines --------------------------------

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(kid, secret, expiry, payload):
    first = b64url(("%s.%d." % (kid, expiry)).encode() + payload)
    mac = hmac.new(secret, first.encode(), hashlib.sha256).digest()
    return first + "." + b64url(mac)


def tokens():
    new = b"fuzz-token-key-new-0123456789"
    old = bytes.fromhex("00112233445566778899aabbccddeeff")
    write("tokens", "valid_new", token("new", new, 0, b"u|a@example.com|news"))
    write("tokens", "valid_old_rotated", token("old", old, 1795000060, b"attachments/k|id|sha|name"))
    write("tokens", "expired", token("new", new, 1700000000, b"x"))
    write("tokens", "unknown_kid", token("gone", new, 0, b"x"))
    write("tokens", "bad_mac", token("new", b"another-secret-0123456789", 0, b"x"))
    write("tokens", "payload_nul_dots", token("new", new, 0, b"a.b\0c"))
    write("tokens", "key_lines", "k1:fuzz-token-key-0123456789\nk2:00112233445566778899aabbccddeeff\n")
    write("tokens", "verp_like", "abcdefghijklmnopqrstuvwxyz234567abcdefghij")
    write("tokens", "address", "dev@example.com")


# ---- config: INI files ------------------------------------------------------

def config():
    with open(os.path.join(ROOT, "ops", "mailfleet.example.ini"), "rb") as fh:
        write("config", "example", fh.read())
    write("config", "rules", """[mailfleet]
bus = local:/var/lib/mailfleet/bus
token_keys = k1:0123456789abcdef0123456789abcdef

[rule.capture]
recipients = alerts@iot.localhost, *@dev.iot.localhost
action = capture
allowed_recipients = example.com, ops@example.org, *.example.net
show_sender = no

[rule.bounces]
recipients = bounce+*@iot.localhost
action = feedback

[transform]
max_recipients = 3
max_header_bytes = 64K
link_expiry = 36h
""")
    write("config", "errors", "[nosuch]\nkey = 1\n")
    write("config", "bad_size", "[transform]\nmax_body_bytes = 12Q\n")
    write("config", "continuation", "[transform]\nmarker = :X:\n  continued\n; comment\n# comment\n")
    write("config", "secret_file", "[mailfleet]\ntoken_keys_file = nonexistent-secret\n")


# ---- http_routes: requests ----------------------------------------------------

OBJECT_KEY = "attachments/2026-11-18/01935c5e-7a00-7000-8000-00000000f022/1-report.txt"
INBOUND_ID = "01935c5e-7a00-7000-8000-00000000f022"
SHA = "ab" * 32


def http_routes():
    link = "%s|%s|%s|report.txt" % (OBJECT_KEY, INBOUND_ID, SHA)
    write("http_routes", "link_get", "GET /a/!%s\nUser-Agent: fuzz\n\n" % link)
    write("http_routes", "link_head", "HEAD /a/!%s\n\n" % link)
    write("http_routes", "link_range", "GET /a/!%s\nRange: bytes=2-5\n\n" % link)
    write("http_routes", "link_suffix_range", "GET /a/!%s\nRange: bytes=-4\n\n" % link)
    write("http_routes", "link_bad_range", "GET /a/!%s\nRange: bytes=99-\n\n" % link)
    write("http_routes", "link_etag", "GET /a/!%s\nIf-None-Match: \"%s\"\n\n" % (link, SHA))
    write("http_routes", "link_revoked", "GET /a/!%s|revoked-message|%s|r.txt\n\n" % (OBJECT_KEY, SHA))
    write("http_routes", "link_missing", "GET /a/!attachments/x/y/1-gone.txt|%s|%s|g.txt\n\n" % (INBOUND_ID, SHA))
    write("http_routes", "link_bad_key", "GET /a/!../../etc/passwd|%s|%s|p\n\n" % (INBOUND_ID, SHA))
    write("http_routes", "link_post", "POST /a/!%s\n\nbody" % link)
    write("http_routes", "link_forged", "GET /a/bmV3LjAuYQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\n")
    write("http_routes", "unsub_get", "GET /u/!u|a@example.com|news\n\n")
    write("http_routes", "unsub_post", "POST /u/!u|a@example.com|news\nContent-Type: "
                                       "application/x-www-form-urlencoded\n\nList-Unsubscribe=One-Click")
    write("http_routes", "unsub_bad", "POST /u/!u|not-an-address|news\n\nList-Unsubscribe=One-Click")
    write("http_routes", "unsub_put", "PUT /u/!u|a@example.com|news\n\n")
    write("http_routes", "sns_signed", "POST /sns\nx-amz-sns-message-type: Notification\n\n!"
          + sns_message("Bounce"))
    write("http_routes", "sns_signed_v1", "POST /sns\n\n!" + sns_message("Complaint", "1"))
    write("http_routes", "sns_subscription", "POST /sns\n\n!" + sns_message("Bounce", "2",
                                                                         "SubscriptionConfirmation"))
    write("http_routes", "sns_unsigned", "POST /sns\n\n" + sns_message("Delivery"))
    write("http_routes", "sns_get", "GET /sns?Action=x&y=1\n\n")


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "reports"))
    smtp_session()
    transform()
    recipients()
    reports()
    sns()
    tokens()
    config()
    http_routes()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print("corpus: %d bytes" % total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
