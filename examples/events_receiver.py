#!/usr/bin/env python3
"""A payrun events receiver (Python 3 standard library only).

Verifies the Standard Webhooks signature and timestamp, answers 204 (accepted) or 400.
Run: PAYRUN_EVENTS_SECRET=whsec_... python3 examples/events_receiver.py 8088
"""
import base64, hashlib, hmac, json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE_SECS = 300
LAST_VERSION = {}  # item (or batch) id -> highest data.version seen


def verify(secret, msg_id, timestamp, signature_header, body, now=None):
    """True when one `v1,<base64>` signature matches HMAC-SHA256("{id}.{ts}.{body}")."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    now = time.time() if now is None else now
    try:
        if abs(now - int(timestamp)) > TOLERANCE_SECS:
            return False
    except ValueError:
        return False
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for sig in signature_header.split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        h = self.headers
        ok = verify(os.environ["PAYRUN_EVENTS_SECRET"], h.get("webhook-id", ""),
                    h.get("webhook-timestamp", ""), h.get("webhook-signature", ""), body)
        if not ok:
            self.send_response(400)
            self.end_headers()
            return
        event = json.loads(body)
        data = event["data"]
        subject = data.get("item_id") or data.get("batch_id")
        if data.get("version", 0) > LAST_VERSION.get(subject, 0):
            LAST_VERSION[subject] = data["version"]
            print(event["type"], event["id"], subject, flush=True)
        # else: older than what we already have; drop it (still 204: it was delivered)
        self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8088), Handler).serve_forever()
