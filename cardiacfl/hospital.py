"""A hospital's side of a deployed study: `site start` checks the data, unpacks the kit into the site's state
folder, says what the node will and will never send, and keeps the site node (SuperNode + warm worker,
client/site_node.py) connected to the lab. A lab that goes away and comes back (a restart keeps its SuperLink
state) is reconnected by Flower's own retries within about 20 s of its return, the node and its warm worker
staying up; a node that exits (the lab refused its key) is started again with backoff. `site status` shows the
site's privacy ledger, its last rounds and whether its node is up.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import threading
import tomllib
from pathlib import Path
from typing import Callable

from client.restarts import keep_running
from cardiacfl.deployment import Processes, flower_environment, free_port, interrupt_on_signals, site_node_command, StudyInterrupted

WILL_SEND = ("model updates for the study's rounds, noised by this site's own DP-SGD within its own budget and "
             "masked by secure aggregation; aggregate metrics (counts, ε spent, validation loss and AUROC/R² only "
             "with at least privacy.min_eval_count patients per class; no exact training loss); and only for an app "
             "this site's operator approved (`cardiacfl site approve`)")
NEVER_SENDS = ("ECGs, images, the manifest, subject identifiers, per-patient predictions, the privacy ledger, "
               "the DP noise")


def node_log(config) -> Path:
    """Where `site start` writes the site node's log (SuperNode, worker, ClientApps)."""
    return config.state_dir / "logs" / "site-node.log"


def unpack_kit(archive: Path, site_id: str, state_dir: Path) -> dict:
    """The kit's files in `<state>/kit` (folder 0700, key 0600), from the archive or its unpacked folder (the
    `<site>/` folder `provision` writes beside it); refuses another site's kit."""
    target = state_dir / "kit"
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target, 0o700)
    if archive.is_dir():
        if not (archive / "kit.toml").is_file():
            raise ValueError(f"{archive}: not a hospital kit (no kit.toml); give the kit archive or its unpacked folder")
        shutil.copytree(archive, target / tomllib.loads((archive / "kit.toml").read_text())["kit"]["site"],
                        dirs_exist_ok=True)
    else:
        try:
            with tarfile.open(archive) as tar:
                _extract_safely(tar, target)
        except (tarfile.TarError, OSError) as err:
            raise ValueError(f"{archive}: not a readable kit archive ({err})") from err
    folders = [p for p in target.iterdir() if p.is_dir()]
    kit = target / site_id
    if kit not in folders:
        raise ValueError(f"{archive}: a kit for {', '.join(p.name for p in folders)}, not for this site ({site_id})")
    info = tomllib.loads((kit / "kit.toml").read_text())["kit"]
    os.chmod(kit / f"{site_id}.key", 0o600)
    return {"lab_address": info["lab_address"], "study": info["study"], "ca": kit / "ca.crt", "key": kit / f"{site_id}.key"}


def _extract_safely(tar: tarfile.TarFile, target: Path) -> None:
    """Extract regular files and folders only, each inside `target`: tarfile's "data" filter where this Python
    has it (3.11.4 and later), else the same refusals by hand (Debian bookworm's Python is 3.11.2)."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(target, filter="data")  # no absolute paths, links out or device files
        return
    root = target.resolve()
    members = tar.getmembers()
    for member in members:
        destination = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()) or member.name.startswith("/") or not destination.is_relative_to(root):
            raise tarfile.TarError(f"refusing {member.name!r}: only files and folders inside the kit")
    for member in members:
        member.mode &= 0o755 if member.isdir() else 0o644
    tar.extractall(target, members=members)


def start_site(kit_archive: Path, site_config: Path, *, threads: int | None = None, status: Callable[[str], None] = print,
               max_backoff_s: float = 60.0) -> int:
    """Run this site's node until SIGINT/SIGTERM/SIGHUP. Returns 1 when the data check finds nothing usable."""
    from sitedata.site_config import load_site_config
    from sitedata.site_data import prepare_site

    config = load_site_config(site_config)
    site = prepare_site(config)
    if site.report.usable_subjects == 0:
        status(f"{config.site_id}: nothing usable in {config.manifest} ({site.report.summary()}); not starting. "
               f"Run `cardiacfl data check --site-config {site_config}` for every problem.")
        return 1
    kit = unpack_kit(kit_archive, config.site_id, config.state_dir)
    status(f"{config.site_id}: {site.report.summary()}")
    status(f"joining study {kit['study']!r} at {kit['lab_address']} (one outbound TLS connection; nothing connects in)")
    status(f"this node will send: {WILL_SEND}")
    status(f"this node never sends: {NEVER_SENDS}")
    command = site_node_command(site_config, threads=threads, supernode_args=[
        "--superlink", kit["lab_address"], "--port", str(free_port()), "--root-certificates", str(kit["ca"]),
        "--auth-supernode-private-key", str(kit["key"])])  # Flower retries a lost lab itself (backoff ≤ 20 s)
    env = flower_environment(config.state_dir / "flwr-home")
    processes = Processes()

    def start_node():
        processes.running.clear()
        return processes.start("site node", command, env, node_log(config))

    def report(code: int, wait: float) -> None:
        status(f"site node exited with code {code} ({_why(node_log(config))}); reconnecting in {wait:.0f} s")

    try:
        with interrupt_on_signals():
            keep_running(start_node, stop=threading.Event(), report=report, cap=max_backoff_s, healthy_s=120)
    except (KeyboardInterrupt, StudyInterrupted):
        status("stopping the site node")
    finally:
        processes.stop()
    return 0


def _why(log: Path) -> str:
    """The reason a site node stopped, in plain words, from the end of its log."""
    tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
    if "Failed to activate SuperNode" in tail:
        return "the lab refused this node: its key is not registered there or was revoked; ask the lab"
    if "Exit Code: 305" in tail or "connection to the SuperLink" in tail:
        return "the lab is unreachable or refused the TLS connection"
    return f"see {log}"


def site_status(site_config: Path) -> dict:
    """The ledger's lifetime ε and its last entries, and whether this site's node (its worker) answers."""
    from client.privacy_ledger import LedgerTampered
    from client.site_round import open_ledger
    from client.worker_channel import WorkerAddress, connect, WorkerUnavailable
    from sitedata.site_config import load_site_config

    config = load_site_config(site_config)
    out = {"site": config.site_id, "budget": config.privacy.target_epsilon}
    try:
        with open_ledger(config) as ledger:
            out["epsilon"] = ledger.epsilon
            out["last_rounds"] = [{"what": "declined" if e["kind"] == "decline" else "trained",
                                   **{k: e.get(k) for k in ("study", "phase", "round", "epsilon", "reason") if k in e}}
                                  for e in ledger.entries if e["kind"] in ("spend", "decline")][-5:]
    except (LedgerTampered, FileNotFoundError) as err:
        out["ledger"] = f"not readable: {err}"
    try:
        connect(WorkerAddress.in_state_dir(config.state_dir), wait_s=0.5).close()
        out["node"] = "running"
    except WorkerUnavailable:
        out["node"] = "not running"
    out["log"] = str(node_log(config))
    return out

