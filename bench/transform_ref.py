#!/usr/bin/python3
"""The reference function's logic in Python, for bench/transform.sh to
compare against: what the cloud reference's Lambda does per mail with the
stdlib email package - parse, read the coded recipients from the first text
part, walk the parts and write each attachment out, build the new MIME mail
with a link per attachment.  Same corpus, same work, no network.

  transform_ref.py OUT_DIR REPEAT FILE...   prints one JSON summary line
"""
import email
import email.policy
import hashlib
import json
import os
import re
import sys
import time
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

MARKER = ":Email_Rxers_Code:"


def handle(raw, out_dir, n):
    msg = email.message_from_bytes(raw)
    body = ""
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and part.get_filename() is None:
            body = part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8", "replace")
            break
    recipients = []
    m = re.search(re.escape(MARKER) + r"(.*?)" + re.escape(MARKER), body, re.S)
    if m:
        recipients = [a.strip(" []<>") for a in re.split(r"[,;\s]+", m.group(1)) if a.strip(" []<>")]
        body = body[:m.start()] + body[m.end():]
    links = []
    for i, part in enumerate(msg.walk()):
        if part.get_content_maintype() == "multipart" or part.get_filename() is None:
            continue
        data = part.get_payload(decode=True)
        name = "%d-%d-%s" % (n, i, re.sub(r"[^A-Za-z0-9._-]", "_", part.get_filename()))
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        links.append((part.get_filename(), len(data), hashlib.sha256(data).hexdigest(),
                      "https://example.invalid/" + name))
    out = MIMEMultipart("alternative")
    out["From"] = "mailfleet <noreply@iot.localhost>"
    out["To"] = ", ".join(recipients)
    out["Subject"] = msg.get("Subject", "")
    text = body + "\n" + "\n".join("%s (%d bytes, %s) %s" % l for l in links)
    html = "<pre>%s</pre><table>%s</table>" % (body, "".join(
        "<tr><td>%s</td><td>%d</td><td>%s</td><td>%s</td></tr>" % l for l in links))
    out.attach(MIMEText(text, "plain"))
    out.attach(MIMEText(html, "html"))
    return out.as_bytes()


def main():
    out_dir, repeat, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    raws = []
    for p in files:
        with open(p, "rb") as f:
            raws.append(f.read())
    t0 = time.perf_counter()
    n = 0
    nbytes = 0
    for _ in range(repeat):
        for raw in raws:
            handle(raw, out_dir, n)
            n += 1
            nbytes += len(raw)
    secs = time.perf_counter() - t0
    print(json.dumps({"msgs": n, "bytes": nbytes, "seconds": round(secs, 4), "msgs_per_s": round(n / secs, 1),
                      "mb_per_s": round(nbytes / 1e6 / secs, 1)}))


if __name__ == "__main__":
    main()
