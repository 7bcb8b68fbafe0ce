"""A study across hosts: a lab and three hospitals as Linux network namespaces joined by a bridge, each with its
own address in 10.200.0.0/24, each running only its own entrypoint (`cardiacfl lab start`, `cardiacfl site
start`). The lab's certificate names the lab's address (not localhost); a study with SecAgg+ and DP finishes;
one hospital's link is cut mid-round and the round completes without it, shown offline on the dashboard; a host
whose key was never registered is refused. With a PostgreSQL test server (CI has one) the lab writes its run
database there, across the bridge, and the dashboard reads it as its read-only role; otherwise on SQLite.
Needs root and `ip netns` (CI has both); skipped elsewhere.
Namespaces, links and every process are removed by name/PID even when the test fails."""

import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from protocol.procfs import descendants, is_alive
from rundb.schema import Round, Study

REPO = Path(__file__).resolve().parents[1]
SUBNET = "10.200.0"
HOSTS = {"lab": 1, "hospital-a": 2, "hospital-b": 3, "hospital-c": 4, "rogue": 5}
DATABASE_HOST = f"{SUBNET}.254"  # the bridge's own address: the lab's database server, as the lab host sees it


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"cflprobe{os.getpid() % 10000}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
        return True
    except (subprocess.CalledProcessError, OSError):
        return False


class Network:
    """A bridge and one namespace per host; names carry this process's id so parallel runs do not clash."""

    def __init__(self):
        self.tag = f"{os.getpid() % 10000}"
        self.bridge = f"cflbr{self.tag}"
        self.namespaces: dict[str, str] = {}

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{DATABASE_HOST}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for host, n in HOSTS.items():
            ns, inside, outside = f"cfl{self.tag}-{n}", f"cfl{self.tag}i{n}", f"cfl{self.tag}o{n}"
            _ip("netns", "add", ns)
            self.namespaces[host] = ns
            _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{n}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def cut(self, host: str) -> None:
        _ip("link", "set", f"cfl{self.tag}o{HOSTS[host]}", "down")

    def down(self) -> None:
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def run(self, host: str, args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        command = ["ip", "netns", "exec", self.namespaces[host], sys.executable, "-m", "cardiacfl.cli", *args]
        return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, **(env or {})})


def _relay(listen: tuple[str, int], target: tuple[str, int]) -> socketserver.ThreadingTCPServer:
    """A TCP relay from the bridge to the test's PostgreSQL server on loopback (which listens nowhere else)."""
    class Pipe(socketserver.BaseRequestHandler):
        def handle(self):
            with socket.create_connection(target) as upstream:
                back = threading.Thread(target=_pump, args=(upstream, self.request), daemon=True)
                back.start()
                _pump(self.request, upstream)
                back.join()

    server = socketserver.ThreadingTCPServer(listen, Pipe)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.fixture
def lab_database(request, tmp_path):
    """(the lab's --db, its environment, the test's own URL, the dashboard's URL and environment)."""
    if not os.environ.get("CARDIACFL_TEST_POSTGRES_URL"):
        path = str(tmp_path / "lab-state" / "study.db")
        return {"lab": path, "lab_env": {}, "test": f"sqlite:///{path}", "dashboard": path, "dashboard_env": {}}
    from sqlalchemy.engine import make_url

    from rundb.access import grant_reader
    from rundb.scratch import reader_role
    from rundb.url import with_user

    writer = request.getfixturevalue("postgres_url")
    url, role = make_url(writer), reader_role(writer)
    grant_reader(writer, role, password="dashboard-pw")  # compose's init script does this
    (tmp_path / "lab-db-password").write_text(url.password)
    (tmp_path / "dashboard-db-password").write_text("dashboard-pw")
    return {"lab_env": {"CARDIACFL_DB_PASSWORD_FILE": str(tmp_path / "lab-db-password")},
            "relay": (url.host, url.port or 5432), "reader_role": role,
            "test": writer, "dashboard": with_user(writer, role),
            "dashboard_env": {"CARDIACFL_DB_PASSWORD_FILE": str(tmp_path / "dashboard-db-password")}}


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not _netns_available(), reason="needs root and `ip netns` (network namespaces)")]


def _study_text(rounds: int) -> str:
    sites = ", ".join(f'"cohort/site_configs/hospital-{s}.toml"' for s in "abc")
    return (f'[study]\nname = "across-hosts"\npreset = "tiny"\nsites = [{sites}]\ndp = true\n\n'
            f'[secagg]\nenabled = true\ntimeout_s = 300\n\n'
            f'[[phase]]\nname = "finetune"\nrounds = {rounds}\nlocal_epochs = 1\nmin_sites = 2\n')


def _rounds(db: Engine) -> dict[int, Round]:
    try:
        with Session(db) as s:
            return {r.server_round: r for r in s.scalars(select(Round))}
    except Exception:  # not created yet
        return {}


def _wait(condition, timeout: float, what: str, processes: dict) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        dead = [name for name, p in processes.items() if p.poll() is not None and name != "rogue"]
        assert not dead, f"{dead} exited while waiting for {what}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(processes: dict[str, subprocess.Popen]) -> None:
    """SIGTERM each entrypoint (it stops what it started), then SIGKILL whatever of their trees is left."""
    trees = {name: [p.pid, *descendants(p.pid)] for name, p in processes.items()}
    for p in processes.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in processes.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    for tree in trees.values():
        for pid in tree:
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_study_across_hosts_with_a_cut_link_and_a_refused_stranger(tmp_path, tiny_cohort_template, lab_database, monkeypatch):
    from sqlalchemy.engine import make_url

    from cardiacfl.hospital import node_log
    from cardiacfl.provision import provision_study
    from rundb.url import with_user
    from sitedata.site_config import load_site_config

    shutil.copytree(tiny_cohort_template, tmp_path / "cohort")
    (tmp_path / "study.toml").write_text(_study_text(rounds=4))
    lab_address = f"{SUBNET}.{HOSTS['lab']}:9092"
    kits = tmp_path / "kits"
    provision_study(kits, "across-hosts", lab_address, ["hospital-a", "hospital-b", "hospital-c"])
    network, processes, relay = Network(), {}, None
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        network.up()
        if "relay" in lab_database:
            relay = _relay((DATABASE_HOST, 0), lab_database["relay"])
            through_relay = make_url(lab_database["test"]).set(host=DATABASE_HOST, port=relay.server_address[1])
            lab_database["lab"] = with_user(through_relay.render_as_string(hide_password=False))  # password: a file
        state = tmp_path / "lab-state"
        db_options = ["--db", lab_database["lab"]] + (["--db-reader", lab_database["reader_role"]] if relay else [])
        processes["lab"] = network.run("lab", ["lab", "start", "--kit", str(kits / "lab"), "--lab-state", str(state), *db_options],
                                       logs / "lab.log", env=lab_database["lab_env"])
        _wait(lambda: (state / "lab.json").is_file(), 90, "the lab", processes)
        # A stranger: a key from the same CA that the lab never registered (provisioned after the lab started).
        provision_study(kits, "across-hosts", lab_address, ["rogue"])
        shutil.copytree(tmp_path / "cohort" / "hospital-c", tmp_path / "cohort" / "rogue")
        rogue_config = tmp_path / "cohort" / "site_configs" / "rogue.toml"
        rogue_config.write_text((tmp_path / "cohort" / "site_configs" / "hospital-c.toml").read_text()
                                .replace('id = "hospital-c"', 'id = "rogue"').replace("../hospital-c", "../rogue"))
        from client.app_gate import app_hash

        digest = app_hash(REPO)  # what `study submit` will print
        for site in ("hospital-a", "hospital-b", "hospital-c", "rogue"):
            config = tmp_path / "cohort" / "site_configs" / f"{site}.toml"
            approved = subprocess.run([sys.executable, "-m", "cardiacfl.cli", "site", "approve", digest,
                                       "--site-config", str(config)], cwd=REPO, capture_output=True, text=True)
            assert approved.returncode == 0, approved.stderr  # each hospital's operator approves the study's app
            processes[site] = network.run(site, ["site", "start", "--kit", str(kits / "kits" / f"{site}.tar.gz"),
                                                 "--site-config", str(config), "--threads", "1"], logs / f"{site}.log")
        node_logs = [node_log(load_site_config(tmp_path / "cohort" / "site_configs" / f"{site}.toml"))
                     for site in ("hospital-a", "hospital-b", "hospital-c")]
        _wait(lambda: all(log.is_file() and "SuperNode ID" in log.read_text(errors="replace") for log in node_logs),
              240, "the three hospitals to connect", processes)
        submitted = subprocess.run(["ip", "netns", "exec", network.namespaces["lab"], sys.executable, "-m", "cardiacfl.cli",
                                    "study", "submit", "--study", str(tmp_path / "study.toml"), "--lab-state", str(state)],
                                   cwd=REPO, capture_output=True, text=True, timeout=180)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        db = create_engine(lab_database["test"])
        _wait(lambda: 2 in _rounds(db), 400, "round 2 to start", processes)
        network.cut("hospital-b")
        cut_at = time.time()
        _wait(lambda: _study_done(db), 600, "the study to finish", processes)
        rounds = _rounds(db)
    finally:
        _stop(processes)
        if relay is not None:
            relay.shutdown()
            relay.server_close()
        network.down()
        for name in processes:
            print(f"--- {name} log (tail) ---\n{(logs / f'{name}.log').read_text()[-1500:]}")

    from cryptography import x509

    cert = x509.load_pem_x509_certificate((kits / "lab" / "superlink.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{SUBNET}.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert sorted(rounds) == [1, 2, 3, 4]
    assert sorted(rounds[1].participants["trained"]) == ["hospital-a", "hospital-b", "hospital-c"]
    assert sorted(rounds[4].participants["trained"]) == ["hospital-a", "hospital-c"]
    assert "rogue" not in str([r.participants for r in rounds.values()])
    dropout = [r for r in rounds.values() if "hospital-b" in r.participants.get("dropped", [])]
    assert dropout, [r.participants for r in rounds.values()]
    normal = min(r.seconds for r in rounds.values() if r.server_round != dropout[0].server_round)
    print(f"rounds (s): {[round(rounds[i].seconds, 1) for i in sorted(rounds)]}; link cut {cut_at - rounds[2].started:.1f} s "
          f"into round 2; the dropout round took {dropout[0].seconds - normal:.1f} s more than the fastest other round")
    assert "the lab refused this node: its key is not registered there" in " ".join((logs / "rogue.log").read_text().split())

    from dashboard import data

    with Session(db) as s:
        study = s.scalars(select(Study)).one()
    db.dispose()
    print(f"study {study.status} in {study.finished - study.started:.0f} s (ServerApp start to end) on {db.dialect.name}")
    assert study.status == "finished", study.status_reason
    study_id = study.id
    for key, value in lab_database["dashboard_env"].items():
        monkeypatch.setenv(key, value)
    health = data.site_health(lab_database["dashboard"], study_id).set_index("site")
    assert health.loc["hospital-b", "state"] == "offline"


def _study_done(db: Engine) -> bool:
    try:
        with Session(db) as s:
            study = s.scalars(select(Study)).first()
            return study is not None and study.status in ("finished", "failed", "interrupted")
    except Exception:
        return False
