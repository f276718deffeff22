"""`featurestore ui`: the catalog page over HTTP (the standard library's server). GET and HEAD
of `/` only; every other method is refused, so nothing can be changed through it. Each page
is read fresh, one at a time (a page reads the repo, the offline store and Redis)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from featurestore.errors import FeatureStoreError
from featurestore.repo import load_repo
from featurestore.ui.catalog import read_catalog
from featurestore.ui.page import render

log = logging.getLogger("featurestore.ui")

# Nothing but the page itself: inline styles and SVG; no script, no request anywhere else.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def serve(root: Path, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Serves until interrupted; `ready(url)` is called once it listens. The repo must load
    (its definitions are checked here, before listening)."""
    load_repo(root)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "featurestore-ui"

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _refuse(self) -> None:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, _message(
                "read-only", "This page only reads: GET or HEAD /."), True, {"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

        def _answer(self, body: bool) -> None:
            if urlsplit(self.path).path != "/":
                self._send(HTTPStatus.NOT_FOUND, _message(
                    "not found", "The catalog is at /."), body)
                return
            try:
                with lock:
                    page = render(read_catalog(root))
            except FeatureStoreError as exc:  # e.g. definitions broken since the start
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, _message(
                    "cannot read the repo", str(exc)), body)
                return
            self._send(HTTPStatus.OK, page, body)

        def _send(self, status: HTTPStatus, page: str, body: bool,
                  headers: dict[str, str] | None = None) -> None:
            data = page.encode()
            self.send_response(status)
            for name, value in {**SECURITY_HEADERS, **(headers or {}),
                                "Content-Type": "text/html; charset=utf-8",
                                "Content-Length": str(len(data))}.items():
                self.send_header(name, value)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            log.info("%s %s", self.address_string(), format % args)

    try:
        httpd = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise FeatureStoreError(f"cannot listen on {host}:{port}: {exc.strerror}; pass another "
                                "--port or --host") from None
    bound_host, bound_port = httpd.server_address[:2]
    try:
        ready(f"http://{bound_host}:{bound_port}/")
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


def _message(title: str, text: str) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
            f"{escape(title)}</title></head><body><h1>{escape(title)}</h1><p>{escape(text)}</p>"
            "</body></html>")
