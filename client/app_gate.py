"""A hospital runs only the app its operator approved, checked before any of the app's code runs.

Flower runs whatever app the lab submits: each message starts `flwr-clientapp`, which pulls the message and
the app's FAB from the SuperNode, installs the FAB and runs its ClientApp with the site's file access. Flower
verifies signatures only for apps fetched from its Hub. So a site's SuperNode runs with `--isolation process`
and this module is its SuperExec:

- `superexec`: Flower's own `flower-superexec`, with two changes: a ClientApp task is launched as
  `cardiacfl-clientapp` instead of `flwr-clientapp` (the executor's command table, one entry), and, where it
  can, forked from a warm launcher that already runs the same gated entry point (client/warm_clientapp.py);
- `clientapp` (`cardiacfl-clientapp`): Flower's own `flwr-clientapp`, with the FAB install step gated: the
  SHA-256 of the FAB's bytes must be in the site's approved list (`cardiacfl site approve`) before the FAB is
  unpacked. Otherwise the task fails with `AppNotApproved`, and Flower's own error path sends the lab an error
  reply naming the hash and the reason; nothing of the app was written to disk or imported.

The approved list lives in the site's state folder (`approved_apps.json`); its path reaches both processes in
the environment variable APPROVED_APPS_ENV, set by client/site_node.py.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import re
import sys
from pathlib import Path

APPROVED_APPS_ENV = "CARDIACFL_APPROVED_APPS"
APPROVED_FILE = "approved_apps.json"
CLIENTAPP_COMMAND = "cardiacfl-clientapp"
_HASH = re.compile(r"^[0-9a-f]{64}$")


class AppNotApproved(RuntimeError):
    """The app's FAB hash is not on this site's approved list."""


# --- the approved list ---------------------------------------------------------------------------------------

def approved_path(state_dir: Path) -> Path:
    return Path(state_dir) / APPROVED_FILE


def approved_apps(path: Path) -> list[dict]:
    """[{hash, approved_at, operator, note}, ...]; an unreadable list approves nothing."""
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return [e for e in entries if isinstance(e, dict) and _HASH.match(str(e.get("hash", "")))] if isinstance(entries, list) else []


def app_hash(target: str | Path) -> str:
    """The SHA-256 Flower gives an app: of a .fab file's bytes, of the FAB Flower builds from an app folder, or
    a hash given as such."""
    text = str(target).strip().lower()
    if _HASH.match(text):
        return text
    path = Path(target)
    if path.is_dir():
        from flwr.cli.build import build_fab_from_files

        return hashlib.sha256(build_fab_from_files(_app_files(path))[0]).hexdigest()
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    raise ValueError(f"{target}: neither a FAB file, an app folder nor a SHA-256 hash (64 hex digits)")


# Folders Flower's FAB never includes (its FAB_EXCLUDE_PATTERNS), skipped while walking: the FAB Flower then builds
# from the rest is byte for byte the one `flwr run` builds, minutes of walking a virtual environment sooner.
_NEVER_TOP = {".venv", "venv", "env", "ENV", "env.bak", "venv.bak", "build", "eggs", ".eggs", "lib", "lib64", "parts", ".flwr"}


def _app_files(root: Path) -> dict[str, Path]:
    """Flower's `collect_files` (symlinks skipped, relative POSIX paths) without the folders above."""
    root = root.resolve()
    files: dict[str, Path] = {}
    for folder, subfolders, names in os.walk(root):
        relative = Path(folder).relative_to(root)
        subfolders[:] = [d for d in subfolders if d != "__pycache__" and not (relative == Path(".") and d in _NEVER_TOP)]
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():  # os.walk does not enter linked folders, so the rest is inside root
                files[(relative / name).as_posix()] = path
    return files


def approve(path: Path, target: str | Path, note: str = "") -> str:
    entries = approved_apps(path)
    digest = app_hash(target)
    if digest not in {e["hash"] for e in entries}:
        entries.append({"hash": digest, "approved_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        "operator": _operator(), "note": note or str(target)})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entries, indent=1))
    return digest


def revoke_approval(path: Path, digest: str) -> bool:
    entries = approved_apps(path)
    kept = [e for e in entries if e["hash"] != digest]
    path.write_text(json.dumps(kept, indent=1))
    return len(kept) < len(entries)


def check_fab(content: bytes, declared_hash: str | None = None, path: Path | None = None) -> str:
    """The FAB's hash if this site approved it; else AppNotApproved with the reason."""
    digest = hashlib.sha256(content).hexdigest()
    if declared_hash and declared_hash != digest:
        raise AppNotApproved(f"the app's declared hash {declared_hash} is not the hash of its content ({digest})")
    path = path or Path(os.environ.get(APPROVED_APPS_ENV, ""))
    if not str(path) or digest not in {e["hash"] for e in approved_apps(path)}:
        raise AppNotApproved(f"app {digest} is not approved by this site's operator (`cardiacfl site approve`); "
                             "it was not installed or run")
    return digest


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# --- the two processes ---------------------------------------------------------------------------------------

def install_clientapp_gate(run_clientapp_module) -> None:
    """Gate Flower's `install_from_fab` in the flwr-clientapp runner: check first, then install as Flower does."""
    original = run_clientapp_module.install_from_fab

    def install_approved(fab_content: bytes, *args, **kwargs):
        check_fab(fab_content)
        return original(fab_content, *args, **kwargs)

    run_clientapp_module.install_from_fab = install_approved


def install_launcher(command_table, task_type) -> None:
    """Make the SuperExec launch ClientApp tasks with this module's gated runner."""
    if task_type not in command_table:
        raise RuntimeError("Flower's SuperExec command table has no ClientApp entry: the launcher seam moved")
    command_table[task_type] = CLIENTAPP_COMMAND


def clientapp() -> None:
    """`cardiacfl-clientapp`: Flower's flwr-clientapp with the approval gate."""
    import importlib

    install_clientapp_gate(importlib.import_module("flwr.supernode.runtime.run_clientapp"))
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    flwr_clientapp()


def superexec(argv: list[str]) -> None:
    """Flower's flower-superexec, launching ClientApps through `cardiacfl-clientapp`: forked from the site's warm
    launcher (client/warm_clientapp.py), or as a new process where that cannot apply."""
    import importlib

    from flwr.supercore.cli.flower_superexec import flower_superexec
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND, TaskType

    from client import warm_clientapp

    install_launcher(TASK_TYPE_TO_COMMAND, TaskType.CLIENT_APP)
    warm_clientapp.install(importlib.import_module("flwr.supercore.superexec.run_superexec"))
    sys.argv = ["flower-superexec", *argv]
    flower_superexec()


if __name__ == "__main__":
    if sys.argv[1:2] == ["superexec"]:
        superexec(sys.argv[2:])
    else:
        raise SystemExit("usage: python -m client.app_gate superexec <flower-superexec arguments>")
