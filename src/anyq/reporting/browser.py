"""Look at the MLflow UI as a user does: a real ``mlflow server`` on loopback, headless Chromium.

:func:`capture_runs_page` starts the server on a free 127.0.0.1 port for a store, opens the
runs page of an experiment through its saved comparison view (:mod:`anyq.tracking.view`)
in headless Chromium, writes a screenshot and returns the rendered page's DOM, so callers
can assert that the comparison columns and the dataset are on the page. The server is
always stopped before returning. Chromium comes from Debian (``apt-get install chromium``);
:func:`ensure_chromium` installs it when missing and the machine allows it.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from anyq.errors import BrowserError
from anyq.tracking.view import view_fragment

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> Optional[str]:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium() -> str:
    """Chromium's path; installed with ``apt-get`` (update first) when missing and we are root."""
    found = find_chromium()
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise BrowserError("chromium is not installed and cannot be installed here (needs apt-get as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise BrowserError(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}")
    found = find_chromium()
    if not found:
        raise BrowserError("apt-get installed chromium but no chromium executable is on PATH")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, server: subprocess.Popen, timeout: float, pause_s: float = 0.5) -> bool:
    """Poll ``url`` until it answers 200 (True), or ``server`` exits or ``timeout`` seconds pass
    (False): the start-up wait of any local HTTP server anyq launches."""
    deadline = time.monotonic() + timeout
    while server.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(pause_s)
    return False

@contextmanager
def mlflow_server(backend_uri: str, artifact_root: str, timeout: float = 120.0) -> Iterator[str]:
    """``mlflow server`` on a free loopback port; yields its base URL; stopped on exit."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow) if mlflow.exists() else "mlflow", "server", "--host", "127.0.0.1", "--port",
               str(port), "--backend-store-uri", backend_uri, "--default-artifact-root", artifact_root,
               "--workers", "1"]
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_http(f"{url}/health", server, timeout):
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
            raise BrowserError(f"mlflow server did not start on {url}: {' | '.join(tail)}")
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server's own group: gunicorn/uvicorn workers too
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


def _chromium(chromium: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="anyq-chromium-") as profile:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--hide-scrollbars", f"--user-data-dir={profile}", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@dataclass
class PageCapture:
    url: str
    screenshot: Path
    dom: str


def capture(chromium: str, url: str, screenshot: Path, *, width: int = 3000, height: int = 1000,
            wait_ms: int = 25000, timeout: float = 180.0) -> PageCapture:
    """Screenshot and rendered DOM of ``url`` after ``wait_ms`` of the page's (virtual) time.

    The default window is wide enough for every column of the saved comparison view: the
    runs table lays out only the columns near its visible part."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    common = (f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}")
    shot = _chromium(chromium, *common, f"--screenshot={screenshot.resolve()}", url, timeout=timeout)
    if not screenshot.is_file():
        raise BrowserError(f"chromium wrote no screenshot: {shot.stderr.strip().splitlines()[-1:]}")
    dom = _chromium(chromium, *common, "--dump-dom", url, timeout=timeout)
    return PageCapture(url, screenshot, dom.stdout)


def dump_dom(chromium: str, url: str, *, width: int = 1400, height: int = 1000, wait_ms: int = 3000,
             timeout: float = 180.0) -> str:
    """The DOM of ``url`` as Chromium rendered it in a ``width`` x ``height`` window, after the
    page's scripts ran for ``wait_ms`` of (virtual) time."""
    done = _chromium(chromium, f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}", "--dump-dom",
                     url, timeout=timeout)
    if not done.stdout.strip():
        raise BrowserError(f"chromium rendered no page for {url}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


#: Appended to a copy of a page: after load, writes the page's width and each table's box into
#: the DOM (``<pre id="measured">``) for :func:`measure_tables` to read back.
_MEASURE = """<script>
window.addEventListener('load', () => {
  const tables = [...document.querySelectorAll('table')].map(t => {
    const box = t.parentElement.getBoundingClientRect(), own = t.getBoundingClientRect();
    return {right: Math.round(own.right), boxRight: Math.round(box.right), width: Math.round(own.width),
            boxWidth: Math.round(box.width)};
  });
  const out = document.createElement('pre');
  out.id = 'measured';
  out.textContent = JSON.stringify({page: document.documentElement.clientWidth,
                                    scroll: document.documentElement.scrollWidth, tables});
  document.body.appendChild(out);
});
</script>"""


@dataclass
class TableFit:
    page: int  # the viewport's width, CSS pixels
    scroll: int  # the document's width: above ``page`` when something sticks out sideways
    tables: list[dict[str, int]]  # per table: width, right edge, and those of its container

    def too_wide(self) -> list[str]:
        """One line per table wider than its container or the page (empty when all fit)."""
        out = [f"the page is {self.scroll} px wide in a {self.page} px window"] if self.scroll > self.page else []
        for i, t in enumerate(self.tables, 1):
            if t["width"] > t["boxWidth"] or t["boxRight"] > self.page:
                out.append(f"table {i}: {t['width']} px in a {t['boxWidth']} px box ending at {t['boxRight']} px")
        return out


def measure_tables(chromium: str, page: Path, width: int = 1400) -> TableFit:
    """Render the HTML file ``page`` in a ``width`` px window and measure its tables."""
    with tempfile.TemporaryDirectory(prefix="anyq-measure-") as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(page.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
        dom = dump_dom(chromium, copy.as_uri(), width=width)
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    if not found:
        raise BrowserError(f"chromium did not measure {page}")
    measured = json.loads(html.unescape(found.group(1)))
    return TableFit(measured["page"], measured["scroll"], measured["tables"])


def capture_runs_page(backend_uri: str, artifact_root: str, experiment_id: str, screenshot: Path,
                      chromium: Optional[str] = None, **kwargs: object) -> PageCapture:
    """The experiment's runs page in its saved comparison view, from a fresh server."""
    chromium = chromium or ensure_chromium()
    with mlflow_server(backend_uri, artifact_root) as base:
        return capture(chromium, f"{base}/{view_fragment(experiment_id)}", screenshot, **kwargs)  # type: ignore[arg-type]
