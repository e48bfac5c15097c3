"""Serve a fake API on a real TCP port.

``serve(api)`` starts a threaded WSGI server in a daemon thread and returns it with its base
URL, for tests and benchmarks that want real loopback HTTP. As a command it runs one provider's
sandbox in the foreground::

    python -m connectors.sandbox.server qonto --port 8100 --seed 1 -o transactions=50000
"""

from __future__ import annotations

import argparse
import sys
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from connectors.sandbox.base import FakeAPI
from connectors.sandbox.registry import SANDBOXES, create_sandbox


class _QuietHandler(WSGIRequestHandler):
    # The fake keeps its own request log; one stderr line per request would drown test output.
    def log_message(self, format: str, *args: Any) -> None:
        return None


class SandboxHTTPServer(ThreadingMixIn, WSGIServer):
    """A WSGI server answering each connection in its own thread."""

    daemon_threads = True
    allow_reuse_address = True
    thread: threading.Thread | None = None

    def shutdown(self) -> None:
        """Stop serving and release the port."""
        super().shutdown()
        self.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)


def serve(api: FakeAPI, host: str = "127.0.0.1", port: int = 0) -> tuple[SandboxHTTPServer, str]:
    """Serve ``api`` on ``host:port`` (0 = any free port) in a daemon thread."""
    server = SandboxHTTPServer((host, port), _QuietHandler)
    server.set_app(api.as_wsgi())
    server.thread = threading.Thread(target=server.serve_forever, name=f"sandbox-{api.slug}", daemon=True)
    server.thread.start()
    bound_host, bound_port = server.server_address[:2]
    return server, f"http://{bound_host}:{bound_port}"


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    parsed: Any = value
    if value.lower() in ("true", "false"):
        parsed = value.lower() == "true"
    else:
        try:
            parsed = int(value)
        except ValueError:
            pass
    return key, parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a provider sandbox on a local port.")
    parser.add_argument("provider", choices=sorted(SANDBOXES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "-o",
        "--option",
        type=_option,
        action="append",
        default=[],
        help="seed option KEY=VALUE, e.g. transactions=50000 (repeatable)",
    )
    args = parser.parse_args(argv)
    api = create_sandbox(args.provider, args.seed, **dict(args.option))
    server, base_url = serve(api, args.host, args.port)
    print(f"{args.provider} sandbox listening on {base_url}  (Ctrl-C to stop)", flush=True)
    describe = getattr(api, "describe", None)
    if callable(describe):
        print(describe(), flush=True)
    try:
        assert server.thread is not None
        while server.thread.is_alive():
            server.thread.join(timeout=1)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
