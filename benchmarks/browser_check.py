"""End-to-end check of the dashboard in a real browser (headless Chromium driven over the DevTools protocol):
seed a large study with the project's own DB writer, start `cardiacfl dashboard` on loopback, check that
nothing is shown before sign-in, sign in through the form, open every page, assert its key elements
rendered, save screenshots and print each page's load time.

    .venv/bin/python benchmarks/browser_check.py [--rounds 1000] [--sites 10] [--out runs/browser]
        [--postgres ADMIN_URL]   # seed a fresh PostgreSQL database; the dashboard reads it as a read-only role

Load time = from navigation to the moment the page's key elements are all in the DOM (real time, polled
every 0.1 s), measured after one warm-up load of the server.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cardiacfl.deployment import free_port  # noqa: E402
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars", "--window-size=1400,1100"]
PAGES = {  # sidebar title -> texts / CSS selectors that prove the page's key elements rendered (each list
    # holds a text no other page has, so a page left over from the previous click cannot pass)
    "Sites": ["Cross-site evaluation", ".vega-embed"],
    "Privacy": ["lifetime budget", ".vega-embed"],
    "Generations": ["Generated CMR", "Reference ECG", "img", ".vega-embed"],
    "Audit": ["Audit rounds", "Download CSV"],
    "Study overview": ["Validation, round by round", "Wall time per round", ".vega-embed"],
}
PASSWORD = "browser-check-password"


class Browser:
    """Just enough of the Chrome DevTools protocol: navigate, evaluate JavaScript, type, screenshot."""

    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp()
        port = free_port()
        self.process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}", f"--remote-debugging-port={port}",
                                         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2))
                page = next(t for t in targets if t["type"] == "page")
                break
            except (OSError, StopIteration, ValueError):
                if time.time() > deadline:
                    raise SystemExit("chromium did not open its DevTools port")
                time.sleep(0.2)
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, legacy=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == message_id:
                return reply.get("result", {})

    def js(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, checks: list[str], timeout: float = 60) -> list[str]:
        """Poll until every check (a CSS selector if it starts with '.' or is a tag name, else text) is present."""
        deadline = time.time() + timeout
        while True:
            missing = [c for c in checks if not self.js(_probe(c))]
            if not missing or time.time() > deadline:
                return missing
            time.sleep(0.1)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.ws.close()
        self.process.terminate()
        self.process.wait(timeout=20)
        shutil.rmtree(self.profile, ignore_errors=True)


def _probe(check: str) -> str:
    if check.startswith(".") or check in ("img", "canvas", "svg"):
        return f"document.querySelector({json.dumps(check)}) !== null"
    return f"document.body && document.body.innerText.includes({json.dumps(check)})"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("chromium not found: install Debian's `chromium` package (see .ci/run)")


@contextmanager
def seeded_database(out: Path, rounds: int, sites: int, postgres_admin: str = "") -> Iterator[tuple[str, dict]]:
    """(the dashboard's --db, its extra environment) for a freshly seeded study: a SQLite file, or a new
    PostgreSQL database (dropped afterwards) that the dashboard reads as its own read-only role."""
    from rundb.seed import seed_study

    start = time.perf_counter()
    if not postgres_admin:
        db = out / "seeded.db"
        db.unlink(missing_ok=True)
        seed_study(str(db), rounds=rounds, sites=sites)
        print(f"seeded {rounds} rounds x {sites} sites in SQLite in {time.perf_counter() - start:.1f} s")
        yield str(db), {}
        return
    from rundb.access import grant_reader
    from rundb.scratch import reader_role, scratch_database

    with scratch_database(postgres_admin, prefix="cardiacfl_browser") as writer:
        seed_study(writer, rounds=rounds, sites=sites)
        password = uuid.uuid4().hex
        reader = grant_reader(writer, reader_role(writer), password)
        print(f"seeded {rounds} rounds x {sites} sites in PostgreSQL in {time.perf_counter() - start:.1f} s; "
              f"the dashboard reads it as {reader_role(writer)}")
        password_file = out / "reader-password"
        password_file.write_text(password)
        password_file.chmod(0o600)
        yield reader, {"CARDIACFL_DB_PASSWORD_FILE": str(password_file)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/browser"))
    parser.add_argument("--postgres", default="", help="PostgreSQL URL of a role that may create databases and roles")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with seeded_database(args.out, args.rounds, args.sites, args.postgres) as (db, db_env):
        check_pages(args.out, db, db_env)


def check_pages(out: Path, db: str, db_env: dict) -> None:
    binary = chromium()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(REPO / ".venv/bin/cardiacfl"), "dashboard", "--db", db, "--port", str(port)],
                              env=dict(os.environ, CARDIACFL_DASHBOARD_PASSWORD=PASSWORD, **db_env),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    failures: list[str] = []
    browser = None
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/_stcore/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("dashboard did not start within 60 s")
                time.sleep(0.5)
        browser = Browser(binary)
        browser.open(base + "/")
        if browser.wait_for(["Study password"]):
            failures.append("the sign-in form did not appear")
        if browser.js(_probe("Validation, round by round")):
            failures.append("study data visible before sign-in")
        browser.screenshot(out / "sign-in.png")
        # sign in through the form as a person would: type the password, click the button
        browser.js("document.querySelector('input[type=password]').focus()")
        browser.call("Input.insertText", text=PASSWORD)
        time.sleep(0.3)
        browser.js("Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'Sign in').click()")
        started = time.perf_counter()
        if browser.wait_for(PAGES["Study overview"]):
            failures.append("signing in did not open the study overview")
        print(f"{'sign-in':12s} {time.perf_counter() - started:5.2f} s  to the study overview")
        for title, checks in PAGES.items():
            name = title.split()[-1].lower()
            started = time.perf_counter()
            # in-app navigation through the sidebar (a reload would start a new, signed-out session)
            browser.js(f"Array.from(document.querySelectorAll('[data-testid=stSidebarNav] a')).find(a => a.innerText.trim().endsWith({json.dumps(title)})).click()")
            missing = browser.wait_for(checks)
            seconds = time.perf_counter() - started
            time.sleep(0.5)  # let charts finish drawing before the screenshot
            browser.screenshot(out / f"{name}.png")
            print(f"{name:12s} {seconds:5.2f} s  {'ok' if not missing else f'MISSING {missing}'}  "
                  f"screenshot {out / f'{name}.png'}", flush=True)
            if missing:
                failures.append(f"{name}: {missing}")
    finally:
        if browser is not None:
            browser.close()
        os.killpg(server.pid, 15)
        server.wait(timeout=20)
    if failures:
        raise SystemExit("browser check failed: " + "; ".join(failures))
    print("browser check passed")


if __name__ == "__main__":
    main()
