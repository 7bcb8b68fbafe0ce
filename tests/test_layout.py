"""The house rules of the layout: which room may import which, no import loops, one home for each metric key,
and the one cross-check between a site's preprocessing and the model preset."""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("client", "server", "dashboard", "sitedata", "rundb", "protocol", "shared_models", "cardiacfl", "synthetic")
# room -> rooms it must never import
FORBIDDEN = {
    "client": {"server", "dashboard", "cardiacfl"},
    "server": {"client", "dashboard", "cardiacfl"},
    "dashboard": {"client", "server", "cardiacfl", "sitedata"},
    "sitedata": {"client", "server", "dashboard", "cardiacfl", "rundb"},
    "rundb": {"client", "server", "dashboard", "cardiacfl", "sitedata", "shared_models"},
    "protocol": {"client", "server", "dashboard", "cardiacfl", "sitedata", "rundb", "shared_models", "synthetic"},
    "shared_models": {"client", "server", "dashboard", "cardiacfl", "sitedata", "rundb"},
}
# The protocol room is what the thin ClientApp imports: NumPy, cryptography and the standard library only.
PROTOCOL_MAY_IMPORT = {"numpy", "cryptography", "protocol"}


def _imports() -> dict[str, set[str]]:
    """module -> project modules it imports (anywhere in the file, lazy imports included)."""
    graph = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # `from pkg import module`
                else:
                    names = []
                found |= {n for n in names if n.split(".")[0] in PACKAGES}
            graph[module] = found
    return graph


def test_rooms_import_only_what_they_may():
    bad = [f"{module} imports {target}" for module, targets in _imports().items() for target in targets
           if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], set())]
    assert not bad, bad


def _third_party_imports(path: Path) -> set[str]:
    import sys

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "__future__"}


def test_the_protocol_room_needs_no_torch_and_no_flower():
    bad = {str(p.relative_to(REPO)): sorted(_third_party_imports(p) - PROTOCOL_MAY_IMPORT)
           for p in (REPO / "protocol").rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_shared_models_is_the_model_alone():
    """No contract, wire format or Flower seam left behind in the model's room."""
    protocol_files = {p.name for p in (REPO / "protocol").glob("*.py")} - {"__init__.py"}
    assert not protocol_files & {p.name for p in (REPO / "shared_models").glob("*.py")}
    assert not {p for p in (REPO / "shared_models").rglob("*.py") if "flwr" in _third_party_imports(p)}


def test_no_sql_of_their_own_outside_rundb():
    """The command line and the dashboard read through rundb.queries; they build no SELECT themselves."""
    pattern = re.compile(r"\bselect\(")
    found = [str(p.relative_to(REPO)) for room in ("cardiacfl", "dashboard", "server", "client")
             for p in (REPO / room).rglob("*.py") if pattern.search(p.read_text())]
    assert not found, found


def test_only_the_study_runner_and_the_seeder_hold_the_writer():
    users = sorted(module for module, targets in _imports().items()
                   if {"rundb.writer.RunDatabase"} & targets or ("rundb.writer" in targets and module.startswith("server")))
    assert users == ["rundb.seed", "server.study_run"], users


def test_no_function_in_server_or_client_is_over_60_lines():
    long = [f"{p.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for room in ("server", "client") for p in (REPO / room).rglob("*.py")
            for node in ast.walk(ast.parse(p.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60]
    assert not long, long


def test_participants_are_read_through_their_contract():
    """Keys of the `participants` record are spelled only in protocol/participants.py (its field names)."""
    import dataclasses

    from protocol.participants import Participants

    keys = [f.name for f in dataclasses.fields(Participants)]
    pattern = re.compile(r"participants\s*(\.get\(|\[)\s*[\"'](" + "|".join(keys) + r")[\"']")
    found = [str(p.relative_to(REPO)) for package in PACKAGES + ("benchmarks",) for p in (REPO / package).rglob("*.py")
             if pattern.search(p.read_text())]
    assert not found, found


def test_no_import_loops():
    imports = _imports()
    graph = {module: {t for t in targets if t in imports and t != module} for module, targets in imports.items()}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for target in graph[node]:
            if state.get(target) == 1:
                raise AssertionError("import loop: " + " -> ".join(stack[stack.index(target):] + [target]))
            if target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_each_metric_key_is_spelled_in_one_place():
    """Site-metric keys are written only in protocol/site_metrics.py. Keys that are also a run-database
    column or a privacy-ledger field name cannot be told apart by a text search and are left out."""
    from rundb.schema import Base
    from protocol.site_metrics import MetricKey

    columns = {c.name for table in Base.metadata.tables.values() for c in table.columns}
    shared_words = columns | {"round", "declined", "reason", "steps", "noise_multiplier"}  # ledger entry fields
    sources = [p for package in PACKAGES + ("benchmarks",) for p in (REPO / package).rglob("*.py")
               if p.name != "site_metrics.py"]
    texts = {p: p.read_text() for p in sources}
    spelled = {}
    for key in MetricKey:
        if key.value in shared_words:
            continue
        pattern = re.compile(r"""["']""" + re.escape(key.value) + r"""["']""")
        spelled[key.value] = [str(p.relative_to(REPO)) for p, text in texts.items() if pattern.search(text)]
    assert not {k: v for k, v in spelled.items() if v}, spelled


def test_data_check_names_a_site_whose_rate_the_model_does_not_take(tiny_cohort):
    from typer.testing import CliRunner

    from cardiacfl.cli import app

    config = tiny_cohort / "site_configs" / "hospital-a.toml"
    text = config.read_text()
    config.write_text(re.sub(r"sampling_rate_hz = \d+", "sampling_rate_hz = 250", text))
    result = CliRunner().invoke(app, ["data", "check", "--site-config", str(config)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "ecg.sampling_rate_hz = 250" in message and "takes 500" in message and "hospital-a.toml" in message


def test_a_round_asking_more_epochs_than_the_site_allows_is_declined(tiny_cohort):
    from client.site_round import train_round
    from shared_models.cardiacnets import build_model
    from shared_models.model_arrays import numpy_state
    from protocol.round_contract import RoundConfig
    from sitedata.site_config import load_site_config

    config = tiny_cohort / "site_configs" / "hospital-b.toml"
    cap = load_site_config(config).training.max_local_epochs
    state = numpy_state(build_model("tiny"))
    rc = RoundConfig(study="t", phase="finetune", server_round=1, preset="tiny", plan=f"finetune:1:{cap + 1}",
                     local_epochs=cap + 1)
    _, metrics = train_round(config, state, rc)
    assert metrics["declined"] == 1 and "max_local_epochs" in metrics["reason"] and metrics["examples"] == 0


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    from shared_models.atomic_files import atomic_write, atomic_write_bytes

    target = atomic_write_bytes(tmp_path / "ledger.json", b"old")

    def broken(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["ledger.json"]
