"""The compose federation through a tiny SecAgg+/DP study, checked from outside the containers
(scripts/test_containers.sh builds the images and calls this with its own Docker daemon in DOCKER_HOST).

1. Inputs made on the host with the project's own commands: a 3-site synthetic cohort (mounted read-only), the
   study's kits for a lab named `lab`, random secrets (files only), the app hash from the lab's image.
2. `docker-compose up`: every service must reach `healthy`.
3. `study submit` of studies/deployed-try.toml with 5 rounds (fine-tuning, DP-SGD, SecAgg+) in the lab container.
4. After round 1: hospital-b is killed and started again; its ε on the named volume is read while it is down and
   again after it is back (equal), and it must train again later in the study.
5. After round 2: the lab container is stopped for longer than a heartbeat's grace and started again; the
   hospitals must be online again within a minute without being touched, the SuperLink must still know the
   run, and `study submit --resume` finishes the study with every hospital in its last round.
6. The dashboard container, in Debian's chromium driven by Playwright, signs in and shows the study read from
   PostgreSQL through the read-only role (screenshots saved).
7. The data mount is read-only, every process in every container runs as a non-root user, and no password is
   in any image layer, environment value, command line or URL.

Prints the figures and writes OUT/report.json; every container, volume and network it made is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from cardiacfl.deployment import free_port  # noqa: E402

PROJECT = "cardiacfl-ct"
SITES = ("hospital-a", "hospital-b", "hospital-c")
SERVICES = ("postgres", "lab", *SITES, "dashboard")
STUDY = "/state/container-check.toml"  # written into the lab's volume, so it outlives the lab's restart
# studies/deployed-try.toml with 5 rounds: a hospital restarted in round 2, the lab in round 3, 2 rounds after
STUDY_TEXT = (REPO / "studies" / "deployed-try.toml").read_text().replace('name = "deployed-try"', 'name = "container-check"')
STUDY_TEXT = STUDY_TEXT.replace("rounds = 3", "rounds = 5")
assert 'name = "container-check"' in STUDY_TEXT and "rounds = 5" in STUDY_TEXT, "studies/deployed-try.toml changed"
SECRETS = ("postgres_password", "lab_db_password", "dashboard_db_password", "dashboard_password")
SITE_UID, LAB_UID = 10001, 10002


class Federation:
    def __init__(self, docker: str, work: Path, env: dict):
        self.docker, self.work, self.env = docker, work, env

    def compose(self, *args: str, check: bool = True, timeout: float = 600, stdin: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker-compose", "-p", PROJECT, "-f", str(REPO / "docker" / "compose.yaml"), *args],
                                env=self.env, capture_output=True, text=True, timeout=timeout, input=stdin)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker-compose {' '.join(args[:3])} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        return result

    def docker_cmd(self, *args: str, check: bool = True) -> str:
        result = subprocess.run([self.docker, *args], env=self.env, capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:2])} failed: {result.stderr[-1500:]}")
        return result.stdout

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def exec(self, service: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", service, *args, check=check)

    def health(self, service: str) -> str:
        cid = self.container(service)
        if not cid:
            return "absent"
        return self.docker_cmd("inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}",
                               cid, check=False).strip() or "absent"

    def wait_healthy(self, services, timeout: float) -> float:
        start = time.time()
        while time.time() - start < timeout:
            states = {s: self.health(s) for s in services}
            if all(v == "healthy" for v in states.values()):
                return time.time() - start
            time.sleep(2)
        raise RuntimeError(f"not healthy after {timeout:.0f} s: {states}")

    def study(self) -> dict:
        result = self.exec("lab", "cardiacfl", "study", "status", "--lab-state", "/state", "--json", check=False)
        return json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 and result.stdout.strip() else {}

    def sql(self, query: str) -> list[list[str]]:
        out = self.exec("postgres", "psql", "-U", "postgres", "-d", "cardiacfl", "-AtF", "\t", "-c", query).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def rounds(self) -> list[dict]:
        rows = self.sql("select study_id, server_round, participants::text, seconds from rounds order by started")
        return [{"study": int(a), "round": int(b), "participants": json.loads(c), "seconds": float(d) if d else None}
                for a, b, c, d in rows]

    def nodes(self) -> list[dict]:
        out = self.exec("lab", "env", "FLWR_HOME=/state/flwr-home", "flwr", "supernode", "list", "study", "--format", "json").stdout
        return json.loads(out[out.index("{"):])["nodes"]


def aggregated_rounds(federation: Federation) -> list[dict]:
    return [r for r in federation.rounds() if r["seconds"] is not None and r["participants"].get("trained")]


def wait_for(what: str, condition, timeout: float, step: float = 2.0):
    start = time.time()
    while time.time() - start < timeout:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def prepare_inputs(work: Path) -> dict:
    """Cohort, kits and secrets on the host, readable by the containers' users and nobody else's."""
    from cardiacfl.provision import provision_study
    from synthetic.cohort import generate_cohort

    data, kits, secret_dir = work / "data", work / "kits", work / "secrets"
    if not (data / "site_configs").is_dir():
        generate_cohort(data, n_sites=3, subjects=8, seed=1, workers=1)
    provision_study(kits, "containers", "lab:9092", list(SITES))
    secret_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    values = {}
    for name in SECRETS:
        path = secret_dir / name
        path.unlink(missing_ok=True)
        path.write_text(secrets.token_hex(24) + "\n")
        path.chmod(0o444)  # the folder is 0700: only the containers given this secret can read it
        values[name] = path.read_text().strip()
    for path in [kits / "lab", *(kits / "lab").rglob("*")]:
        os.chown(path, LAB_UID, LAB_UID)
    for site in SITES:
        os.chown(kits / "kits" / f"{site}.tar.gz", SITE_UID, SITE_UID)
    return {"data": data, "kits": kits, "secrets": secret_dir, "values": values}


def epsilon_on_volume(federation: Federation, site: str) -> float:
    """The site's lifetime ε from its named volume, read by a one-off container while the site is down."""
    out = federation.docker_cmd("run", "--rm", "--entrypoint", "cardiacfl", "-e", "CARDIACFL_STATE_DIR=/state",
                                "-v", f"{PROJECT}_{site}-state:/state:ro", "-v", f"{federation.work / 'data'}:/data:ro",
                                "cardiacfl-site:latest", "site", "status", "--site-config",
                                f"/data/site_configs/{site}.toml", "--json")
    return float(json.loads(out.strip().splitlines()[-1])["epsilon"])


def epsilon_running(federation: Federation, site: str) -> float:
    out = federation.exec(site, "cardiacfl", "site", "status", "--site-config", f"/data/site_configs/{site}.toml", "--json").stdout
    return float(json.loads(out.strip().splitlines()[-1])["epsilon"])


def restart_hospital(federation: Federation, site: str, report: dict) -> None:
    epsilon_before = epsilon_running(federation, site)
    federation.compose("kill", site)
    epsilon_down = epsilon_on_volume(federation, site)
    federation.compose("start", site)
    back_in = federation.wait_healthy([site], 180)
    epsilon_after = epsilon_running(federation, site)
    report["hospital_restart"] = {"site": site, "epsilon_before_kill": epsilon_before, "epsilon_on_volume_while_down":
                                  epsilon_down, "epsilon_after_restart": epsilon_after, "healthy_again_s": round(back_in, 1)}
    print(f"{site} killed and started again: ε {epsilon_before:.3f} before, {epsilon_down:.3f} on its volume while down, "
          f"{epsilon_after:.3f} after (healthy again in {back_in:.0f} s)", flush=True)
    if not (epsilon_before <= epsilon_down <= epsilon_after) or epsilon_down == 0:
        raise RuntimeError(f"{site}'s ε did not survive its restart: {report['hospital_restart']}")


def restart_lab(federation: Federation, report: dict) -> None:
    run_before = federation.study().get("flower_run", {}).get("id")
    federation.compose("stop", "-t", "20", "lab")
    stopped = time.time()
    time.sleep(max(0.0, 30 - (time.time() - stopped)))  # past the nodes' heartbeat grace: they show offline at restart
    federation.compose("start", "lab")
    ready = federation.wait_healthy(["lab"], 180)
    healthy_at = time.time()

    def all_online():
        nodes = federation.nodes()
        return len(nodes) == len(SITES) and all(n["status"] == "online" for n in nodes) and nodes

    wait_for("the hospitals to reconnect to the restarted lab", all_online, 60, step=1.0)
    reconnected = time.time() - healthy_at
    after = federation.study()
    report["lab_restart"] = {"down_s": round(healthy_at - stopped, 1), "lab_healthy_s": round(ready, 1),
                             "hospitals_online_after_s": round(reconnected, 1), "flower_run": after.get("flower_run"),
                             "study_after_restart": {k: after.get(k) for k in ("status", "round", "reason")}}
    print(f"lab stopped and started again ({healthy_at - stopped:.0f} s down): all hospitals online {reconnected:.0f} s "
          f"after it was healthy; Flower run {run_before} is now {after.get('flower_run', {}).get('status')}; "
          f"study {after.get('status')} at round {after.get('round')}", flush=True)
    if after.get("flower_run", {}).get("id") != run_before or "unknown" in str(after.get("flower_run", {}).get("status")):
        raise RuntimeError(f"the restarted lab lost its SuperLink state: {after}")


def check_no_passwords(federation: Federation, values: dict) -> list[str]:
    """Every image's history and config and every container's environment, command and arguments."""
    leaks = []
    texts = {}
    for image in ("site", "lab", "dashboard"):
        texts[f"image cardiacfl-{image} history"] = federation.docker_cmd("history", "--no-trunc", "--format", "{{.CreatedBy}}",
                                                                         f"cardiacfl-{image}:latest")
        texts[f"image cardiacfl-{image} config"] = federation.docker_cmd("image", "inspect", f"cardiacfl-{image}:latest")
    for service in SERVICES:
        texts[f"container {service}"] = federation.docker_cmd("inspect", federation.container(service))
    url_with_password = re.compile(r"[a-z+]+://[^/\s:@\"]+:[^@\s\"]+@")
    for where, text in texts.items():
        leaks += [f"{where}: the {name} value" for name, value in values.items() if value in text]
        leaks += [f"{where}: {m}" for m in re.findall(r"[A-Z_]*PASSWORD=[^\s\"]+", text) if "_FILE=" not in m]
        leaks += [f"{where}: a URL with a password" for _ in url_with_password.findall(text)]
    return leaks


def check_users(federation: Federation) -> dict:
    users = {}
    for service in SERVICES:
        rows = federation.docker_cmd("top", federation.container(service), "-eo", "pid,uid,args").splitlines()[1:]
        users[service] = sorted({int(row.split()[1]) for row in rows if row.strip()})
    return users


def dashboard_in_browser(port: int, password: str, out: Path) -> dict:
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-quic"]
    seen = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=flags)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
            page.get_by_text("Study password").wait_for(timeout=60_000)
            seen["data_hidden_before_sign_in"] = "Validation, round by round" not in page.inner_text("body")
            page.locator("input[type=password]").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_text("Validation, round by round").wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            seen["overview_names_the_study"] = "container-check" in page.inner_text("body")
            page.screenshot(path=str(out / "dashboard-overview.png"), full_page=True)
            page.locator("[data-testid=stSidebarNav] a", has_text="Privacy").click()
            page.get_by_text("lifetime budget").wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            body = page.inner_text("body")
            seen["privacy_lists_every_hospital"] = all(site in body for site in SITES)
            page.screenshot(path=str(out / "dashboard-privacy.png"), full_page=True)
        finally:
            browser.close()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docker", default="docker")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--builds", type=Path, help="image<TAB>seconds<TAB>bytes per line (test_containers.sh)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"images": {}}
    if args.builds and args.builds.is_file():
        for line in args.builds.read_text().splitlines():
            image, seconds, size = line.split("\t")
            report["images"][image] = {"build_s": float(seconds), "size_mb": round(int(size) / 1e6)}

    inputs = prepare_inputs(args.work)
    env = dict(os.environ, CARDIACFL_KITS=str(inputs["kits"]), CARDIACFL_DATA=str(inputs["data"]),
               CARDIACFL_SECRETS=str(inputs["secrets"]), CARDIACFL_DASHBOARD_PORT=str(free_port()),
               CARDIACFL_FLEET_PORT=str(free_port()))
    federation = Federation(args.docker, args.work, env)
    digest = federation.docker_cmd("run", "--rm", "--entrypoint", "cardiacfl", "cardiacfl-lab:latest", "app-hash").strip()
    env["CARDIACFL_APP_HASH"] = digest
    failures: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt("SIGTERM")))  # to `finally`
    try:
        federation.compose("down", "-v", "--remove-orphans", check=False)  # nothing left from an earlier run
        start = time.time()
        federation.compose("up", "-d", "--no-build")
        report["all_healthy_s"] = round(federation.wait_healthy(SERVICES, 300), 1)
        print(f"all {len(SERVICES)} services healthy {report['all_healthy_s']:.0f} s after `up`", flush=True)

        federation.compose("exec", "-T", "lab", "sh", "-c", f"cat > {STUDY}", stdin=STUDY_TEXT)
        submitted = time.time()
        out = federation.exec("lab", "cardiacfl", "study", "submit", "--study", STUDY, "--lab-state", "/state").stdout
        print(f"study submitted (app {digest[:12]}..., Flower run {out.strip().splitlines()[-1]})", flush=True)
        wait_for("round 1 to be aggregated", lambda: len(aggregated_rounds(federation)) >= 1, 600)
        restart_hospital(federation, "hospital-b", report)
        wait_for("round 2 to be aggregated", lambda: len(aggregated_rounds(federation)) >= 2, 600)
        restart_lab(federation, report)
        federation.exec("lab", "cardiacfl", "study", "submit", "--study", STUDY, "--lab-state", "/state", "--resume")
        wait_for("the resumed study to run", lambda: federation.study().get("status") == "running", 300, step=1.0)
        final = wait_for("the study to finish", lambda: (s := federation.study()).get("status") in ("finished", "failed") and s, 900)
        report["study"] = {"status": final["status"], "reason": final.get("reason"), "wall_s": round(time.time() - submitted, 1),
                           "rounds": aggregated_rounds(federation), "all_rounds": federation.rounds()}
        print(f"study {final['status']} {report['study']['wall_s']:.0f} s after submission "
              f"(with both restarts); {time.time() - start:.0f} s from `up`", flush=True)
        for r in report["study"]["all_rounds"]:
            took = f"{r['seconds']:.1f} s" if r["seconds"] is not None else "not finished"
            print(f"  round {r['round']} (study #{r['study']}): {r['participants'].get('outcome', '-')}, {took}, "
                  f"trained: {', '.join(r['participants'].get('trained', [])) or 'none'}")
        if final["status"] != "finished":
            failures.append(f"the study ended {final['status']}: {final.get('reason')}")
        last = report["study"]["rounds"][-1]["participants"]["trained"] if report["study"]["rounds"] else []
        if sorted(last) != sorted(SITES):
            failures.append(f"the last round aggregated {last}, not every hospital")
        epsilon_end = epsilon_running(federation, "hospital-b")
        report["hospital_restart"]["epsilon_at_end"] = epsilon_end
        if epsilon_end <= report["hospital_restart"]["epsilon_on_volume_while_down"]:
            failures.append("hospital-b never trained again after its restart")

        seen = dashboard_in_browser(int(env["CARDIACFL_DASHBOARD_PORT"]), inputs["values"]["dashboard_password"], args.out)
        report["dashboard"] = seen
        failures += [f"dashboard: {k}" for k, ok in seen.items() if not ok]
        print(f"dashboard in chromium: {seen}; screenshots in {args.out}", flush=True)

        write = federation.exec("hospital-a", "sh", "-c", "touch /data/written-by-the-site", check=False)
        report["data_mount_write"] = (write.stdout + write.stderr).strip()
        if write.returncode == 0:
            failures.append("a hospital could write to its data mount")
        report["users"] = check_users(federation)
        failures += [f"{s} runs a process as root" for s, uids in report["users"].items() if 0 in uids]
        report["password_leaks"] = check_no_passwords(federation, inputs["values"])
        failures += report["password_leaks"]
        print(f"data mount write refused: {report['data_mount_write']!r}; process uids: {report['users']}; "
              f"password leaks: {report['password_leaks'] or 'none'}", flush=True)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - reported with the logs below
        failures.append(f"{type(err).__name__}: {err}")
    finally:
        logs = args.out / "logs"
        logs.mkdir(exist_ok=True)
        for service in SERVICES:
            (logs / f"{service}.log").write_text(federation.compose("logs", "--no-color", service, check=False).stdout)
        for site in SITES:
            node = federation.exec(site, "sh", "-c", f"cat /state/{site}/logs/site-node.log", check=False)
            (logs / f"{site}-node.log").write_text(node.stdout[-200_000:])
        federation.compose("down", "-v", "--remove-orphans", check=False)
    report["failures"] = failures
    (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    for image, figures in report["images"].items():
        print(f"image cardiacfl-{image}: {figures['size_mb']} MB, built in {figures['build_s']:.0f} s")
    if failures:
        print("container check FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        sys.exit(1)
    print(f"container check passed; report {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
