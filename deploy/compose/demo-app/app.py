"""sqlease demo app: ONE persistent MySQL connection, opened at start.

Each page view runs a query on that same connection and shows the MySQL
user it is connected as. Without sqlease, an app using Vault's dynamic
credentials would see a new user per fetch, or break when the lease ends;
through sqlease the connection (and its id) stays, and the user behind it
changes at every rotation.
"""

import datetime
import html
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pymysql


def connect():
    for attempt in range(60):
        try:
            return pymysql.connect(
                host=os.environ.get("DB_HOST", "127.0.0.1"),
                port=int(os.environ.get("DB_PORT", "3307")),
                user=os.environ.get("DB_USER", "app"),
                password=os.environ["DB_PASSWORD"],
                database=os.environ.get("DB_NAME") or None,
                autocommit=True,
            )
        except pymysql.err.OperationalError as e:
            print(f"waiting for sqlease: {e}", file=sys.stderr)
            time.sleep(1)
    sys.exit("cannot connect to sqlease")


CONN = connect()
OPENED = datetime.datetime.now(datetime.timezone.utc)
SEEN = []  # (first seen, user)
VIEWS = 0


class Page(BaseHTTPRequestHandler):
    def do_GET(self):
        global VIEWS
        if self.path != "/":
            self.send_error(404)
            return
        with CONN.cursor() as cur:
            cur.execute("SELECT CURRENT_USER(), CONNECTION_ID(), NOW()")
            user, conn_id, now = cur.fetchone()
        VIEWS += 1
        if not SEEN or SEEN[-1][1] != user:
            SEEN.append((datetime.datetime.now(datetime.timezone.utc), user))
        rows = "".join(
            f"<tr><td>{t:%H:%M:%S}</td><td><code>{html.escape(u)}</code></td></tr>"
            for t, u in SEEN
        )
        body = f"""<!doctype html><meta charset=utf-8>
<meta http-equiv=refresh content=5>
<title>sqlease demo</title>
<h1>Connected as <code>{html.escape(user)}</code></h1>
<p>One connection, opened {OPENED:%H:%M:%S} UTC, connection id {conn_id}
(the proxy's id: it never changes), {VIEWS} page views, server time {now}.</p>
<h2>MySQL users behind this one connection</h2>
<table><tr><th>since (UTC)</th><th>user</th></tr>{rows}</table>
"""
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    print("demo app on :8080, one connection through sqlease", file=sys.stderr)
    HTTPServer(("0.0.0.0", 8080), Page).serve_forever()
