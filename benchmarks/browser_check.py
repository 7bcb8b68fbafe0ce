"""End-to-end check of the dashboard in a real browser (headless Chromium): seed a large study with the
project's own DB writer, start `cardiacfl dashboard` on loopback, sign in with a token, open every page,
assert its key elements rendered, save screenshots and print each page's load time.

    .venv/bin/python benchmarks/browser_check.py [--rounds 1000] [--sites 10] [--out runs/browser]

Load time = wall time of one headless Chromium run that loads the page and waits until the page's key text
appears in the DOM (polling), browser start-up included.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars", "--window-size=1400,1100"]
PAGES = {  # url path -> text that proves the page's key element rendered
    "overview": ["Global validation metrics", "Wall time per round", "vega-embed"],
    "sites": ["Cross-site evaluation", "vega-embed"],
    "privacy": ["lifetime budget", "vega-embed"],
    "generations": ["Reference ECG", "Generated CMR", "<img"],
    "audit": ["Audit", "Download CSV"],
}
TOKEN = "browser-check-token"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("chromium not found: install Debian's `chromium` package (see .ci/run)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dump(browser: str, url: str, budget_ms: int) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                                 "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/browser"))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from dashboard.seed import seed_study

    browser = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    db = args.out / "seeded.db"
    db.unlink(missing_ok=True)
    start = time.perf_counter()
    seed_study(str(db), rounds=args.rounds, sites=args.sites)
    print(f"seeded {args.rounds} rounds x {args.sites} sites in {time.perf_counter() - start:.1f} s")
    port = free_port()
    env = dict(os.environ, CARDIACFL_DASHBOARD_PASSWORD=TOKEN)
    server = subprocess.Popen([str(REPO / ".venv/bin/cardiacfl"), "dashboard", "--db", str(db), "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    failures = []
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("dashboard did not start within 60 s")
                time.sleep(0.5)
        locked = dump(browser, f"http://127.0.0.1:{port}/overview", 8000)
        if "Sign in" not in locked or "Global validation metrics" in locked:
            failures.append("overview without a token did not show the sign-in form only")
        for page, expected in PAGES.items():
            url = f"http://127.0.0.1:{port}/{page}?token={TOKEN}"
            started = time.perf_counter()
            dom = ""
            for budget in (3000, 6000, 12000, 24000):
                dom = dump(browser, url, budget)
                if all(e in dom for e in expected):
                    break
            seconds = time.perf_counter() - started
            missing = [e for e in expected if e not in dom]
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
                                f"--screenshot={(args.out / f'{page}.png').resolve()}", url], capture_output=True, timeout=120)
            status = "ok" if not missing else f"MISSING {missing}"
            print(f"{page:12s} {seconds:6.1f} s  {status}  screenshot {args.out / f'{page}.png'}", flush=True)
            if missing:
                failures.append(f"{page}: {missing}")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=20)
    if failures:
        raise SystemExit("browser check failed: " + "; ".join(failures))
    print("browser check passed")


if __name__ == "__main__":
    main()
