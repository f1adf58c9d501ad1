"""Fixtures for the runtime tests: find node/chromium/node_modules, serve files to a headless browser.

A runtime that is missing skips its tests on a developer's machine; with CI=true (as .ci/run runs)
it fails them instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--mute-audio"]


def require(condition: bool, what: str) -> None:
    """Skip when `what` is missing, except in CI (CI=true), where a missing runtime is a failure."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing in CI: .ci/run must install it")
    pytest.skip(f"{what} is not installed here (CI installs it)")


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` executable, with both samples' node_modules installed."""
    path = shutil.which("node")
    require(path is not None, "node")
    require((SAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "samples/node/node_modules (npm ci)")
    require((SAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir(), "samples/web/node_modules (npm ci)")
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless-capable `chromium`."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    require(path is not None, "chromium")
    return path


def chromium_command(binary: str, profile: str, *extra: str) -> list[str]:
    """A headless chromium command line with a fresh profile and no background network."""
    return [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra]


class PageServer:
    """Serves `samples/` at / and one export folder at /out/; a page POSTs its result to /result."""

    def __init__(self, out_dir: Path, extra: dict[str, Path] | None = None) -> None:
        self.results: queue.Queue = queue.Queue()
        roots = {"/out/": Path(out_dir), **(extra or {}), "/": SAMPLES}
        results = self.results

        class Handler(http.server.SimpleHTTPRequestHandler):
            extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                              ".wasm": "application/wasm", ".onnx": "application/octet-stream"}

            def translate_path(self, path: str) -> str:
                path = path.split("?", 1)[0]
                for prefix, root in roots.items():
                    if path.startswith(prefix):
                        return str(root / path[len(prefix):])
                return str(SAMPLES / path.lstrip("/"))

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
        self.httpd.shutdown()
        self.httpd.server_close()


def run_page(chromium: str, server: PageServer, path: str, timeout: float = 120.0) -> dict:
    """Open `path` on `server` in headless chromium and return the JSON the page POSTs to /result."""
    with tempfile.TemporaryDirectory(prefix="exporter-chromium-") as profile:
        proc = subprocess.Popen(chromium_command(chromium, profile, server.url + path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            return server.results.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"the page posted no result within {timeout:.0f} s: {proc.communicate()[1][-2000:]}") from None
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
