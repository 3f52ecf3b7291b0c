"""Open a page in real headless Chromium and collect what went wrong, over the DevTools protocol."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_page(path: Path, settle_s: float = 1.5, timeout_s: float = 60.0) -> dict:
    """Load ``path`` in headless Chromium; return console errors, exceptions and page facts."""
    import websocket  # websocket-client, a dev dependency

    port = _free_port()
    profile = tempfile.mkdtemp(prefix="arrcoc-chromium-")
    proc = subprocess.Popen(
        [chromium_path(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2))
                page = next(t for t in targets if t["type"] == "page")
                break
            except (OSError, StopIteration):
                if time.time() > deadline:
                    raise TimeoutError("chromium did not open its DevTools port") from None
                time.sleep(0.2)
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout_s, suppress_origin=True)
        ids = iter(range(1, 10**6))
        events: list[dict] = []

        def call(method: str, **params) -> dict:
            mid = next(ids)
            ws.send(json.dumps({"id": mid, "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == mid:
                    return msg.get("result", {})
                events.append(msg)

        for domain in ("Runtime", "Log", "Page"):
            call(f"{domain}.enable")
        call("Page.navigate", url=path.resolve().as_uri())
        while not any(e.get("method") == "Page.loadEventFired" for e in events):
            events.append(json.loads(ws.recv()))
        time.sleep(settle_s)
        facts = call("Runtime.evaluate", returnByValue=True, expression="""({
            title: document.title,
            headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
            images: document.images.length,
            brokenImages: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length,
            videos: document.querySelectorAll('video').length,
            tables: document.querySelectorAll('table').length})""")["result"]["value"]
        ws.settimeout(0.5)
        try:
            while True:
                events.append(json.loads(ws.recv()))
        except websocket.WebSocketTimeoutException:
            pass
        ws.close()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    errors = [e["params"]["exceptionDetails"].get("text", "exception") for e in events if e.get("method") == "Runtime.exceptionThrown"]
    errors += [str(e["params"]["args"]) for e in events
               if e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error"]  # fmt: skip
    errors += [e["params"]["entry"]["text"] for e in events
               if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]  # fmt: skip
    return {"errors": errors, **facts}
