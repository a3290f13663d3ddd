#!/usr/bin/python3
"""DATA->250 latency of an SMTP server: SESSIONS threads each send MESSAGES
messages of SIZE bytes over one connection (pipelining nothing), timing from
the last byte of ".\\r\\n" to the reply.  Prints one JSON line:
{"messages":N,"seconds":S,"msgs_per_s":R,"p50_ms":..,"p90_ms":..,"p99_ms":..,"max_ms":..}

  smtp_latency.py HOST:PORT [--sessions 8] [--messages 250] [--size 10240]
"""
import argparse
import json
import socket
import threading
import time


def reply(sock, buf):
    while True:
        while b"\r\n" not in buf[0]:
            data = sock.recv(65536)
            if not data:
                raise EOFError("server closed")
            buf[0] += data
        line, buf[0] = buf[0].split(b"\r\n", 1)
        if line[3:4] != b"-":
            return int(line[:3])


def session(addr, n, body, out, errors):
    try:
        s = socket.create_connection(addr, timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = [b""]
        reply(s, buf)
        s.sendall(b"EHLO bench.localhost\r\n")
        reply(s, buf)
        for i in range(n):
            s.sendall(b"MAIL FROM:<bench@example.com>\r\n")
            assert reply(s, buf) == 250
            s.sendall(b"RCPT TO:<alerts@iot.localhost>\r\n")
            assert reply(s, buf) == 250
            s.sendall(b"DATA\r\n")
            assert reply(s, buf) == 354
            s.sendall(b"Subject: bench %d %d\r\nMessage-ID: <%d.%d.%f@bench>\r\n\r\n" % (
                threading.get_ident(), i, threading.get_ident(), i, time.time()) + body)
            t0 = time.perf_counter()
            s.sendall(b".\r\n")
            code = reply(s, buf)
            dt = time.perf_counter() - t0
            if code != 250:
                errors.append(code)
            else:
                out.append(dt)
        s.sendall(b"QUIT\r\n")
        s.close()
    except Exception as e:  # counted, reported
        errors.append(repr(e))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--messages", type=int, default=250)
    ap.add_argument("--size", type=int, default=10240)
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    line = b"X" * 78 + b"\r\n"
    body = line * max(1, a.size // len(line))
    lat, errors = [], []
    threads = [threading.Thread(target=session, args=((host, int(port)), a.messages, body, lat, errors))
               for _ in range(a.sessions)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    lat.sort()

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None
    print(json.dumps({"messages": len(lat), "errors": len(errors), "seconds": round(secs, 3),
                      "msgs_per_s": round(len(lat) / secs, 1) if secs else 0,
                      "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
                      "max_ms": round(lat[-1] * 1000, 2) if lat else None}))


if __name__ == "__main__":
    main()
