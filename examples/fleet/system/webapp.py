#!/usr/bin/python3
"""nixtasks example web service.

GET /        200, an HTML page naming the host and the release
GET /health  200 with JSON {"status": "ok", "host": ..., "release": ...},
             or 500 with "status": "unhealthy" when the host's healthy knob is false

The release is baked into this store path (share/nixtasks-webapp/release);
host name and health come from the per-host JSON given with --config.
Only the Python standard library is used: it runs on the lab's /usr/bin/python3.
"""

import argparse
import html
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RELEASE_FILE = Path(__file__).resolve().parent.parent / "share" / "nixtasks-webapp" / "release"


def sd_notify(message: str) -> None:
    """Tell systemd we are ready (Type=notify), so `systemctl start` returns
    only once the port is bound."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(path)
        sock.sendall(message.encode())


def make_handler(config: dict, release: str):
    host = config["host"]

    class Handler(BaseHTTPRequestHandler):
        server_version = f"nixtasks-webapp/{release}"

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            path = self.path.split("?", 1)[0]
            if path == "/health":
                healthy = bool(config.get("healthy", True))
                body = {"status": "ok" if healthy else "unhealthy",
                        "host": host, "release": release}
                self._send(200 if healthy else 500,
                           (json.dumps(body) + "\n").encode(), "application/json")
            elif path == "/":
                page = (
                    f"<!doctype html>\n<title>{html.escape(host)}</title>\n"
                    f"<h1>{html.escape(host)}</h1>\n"
                    f"<p>host: {html.escape(host)}</p>\n"
                    f"<p>release: {html.escape(release)}</p>\n"
                    f"<p>site: {html.escape(config.get('siteName', ''))}</p>\n"
                    f"<p>{html.escape(config.get('motd', ''))}</p>\n"
                )
                self._send(200, page.encode(), "text/html; charset=utf-8")
            else:
                self._send(404, b"not found\n", "text/plain")

        do_HEAD = do_GET  # noqa: N815

    return Handler


class DualStackServer(ThreadingHTTPServer):
    """An IPv6 socket that takes IPv4 connections too (as ::ffff:a.b.c.d)."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def make_server(bind: str, port: int, handler) -> ThreadingHTTPServer:
    if ":" not in bind:
        return ThreadingHTTPServer((bind, port), handler)
    try:
        return DualStackServer((bind, port), handler)
    except OSError:  # IPv6 is off on this host: IPv4 alone
        if bind != "::":
            raise
        return ThreadingHTTPServer(("0.0.0.0", port), handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="per-host JSON settings")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--bind", default="::",
                        help="address to listen on (default ::, IPv6 and IPv4 both; 0.0.0.0 where IPv6 is off)")
    args = parser.parse_args()

    config = json.loads(Path(args.config).read_text())
    release = RELEASE_FILE.read_text().strip()
    server = make_server(args.bind, args.port, make_handler(config, release))
    server.daemon_threads = True
    print(f"nixtasks-webapp {release} for {config['host']} listening on "
          f"{server.server_address[0]} port {args.port}", flush=True)
    sd_notify("READY=1")
    server.serve_forever()


if __name__ == "__main__":
    main()
