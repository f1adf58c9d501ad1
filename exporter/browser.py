"""Running the browser sample page (samples/web) in headless Chromium and reading back its result.

A local HTTP server serves `samples/` at / and the export folder at /out/; the page is opened with
`?out=/out/&report=/result` and POSTs its result (verdict, figures, outputs) to /result. Chromium
runs headless with a fresh profile, no GPU, no QUIC and no background network, so nothing but the
local server is contacted.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--mute-audio")


def find_chromium() -> str | None:
    """The chromium executable (Debian's `chromium`), or None."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_command(binary: str, profile: str, *extra: str) -> list[str]:
    """A headless chromium command line with a fresh profile and no background network."""
    return [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra]


class PageServer:
    """Serves `samples/` at / and one export folder at /out/; a page POSTs its result to /result."""

    def __init__(self, out_dir: Path) -> None:
        self.results: queue.Queue = queue.Queue()
        roots = {"/out/": Path(out_dir), "/": SAMPLES}
        results = self.results

        class Handler(http.server.SimpleHTTPRequestHandler):
            extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                              ".wasm": "application/wasm", ".onnx": "application/octet-stream"}

            def translate_path(self, path: str) -> str:
                path = path.split("?", 1)[0]
                prefix = next(p for p in roots if path.startswith(p))
                return str(roots[prefix] / path[len(prefix):])

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                results.put(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "PageServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_page(chromium: str, server: PageServer, path: str, timeout: float = 180.0) -> dict:
    """Open `path` on `server` in headless chromium; return the JSON the page POSTs (TimeoutError if none)."""
    # chromium's helper processes may still write to the profile after the browser exits: its own session
    # is killed as a group, and the profile's removal tolerates late files
    with tempfile.TemporaryDirectory(prefix="exporter-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(chromium_command(chromium, profile, server.url + path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            return server.results.get(timeout=timeout)
        except queue.Empty:
            _stop(proc)
            raise TimeoutError(f"the page posted no result within {timeout:.0f} s: {proc.communicate()[1][-500:]}") from None
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """End the chromium this module started, with the helper processes of its session."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
