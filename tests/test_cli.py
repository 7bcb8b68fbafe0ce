"""The command line, consistent: one name per thing, help on every option, one exit-code convention, errors that
say where they looked."""

import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from cardiacfl.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _commands(command: click.Command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, path + (name,))


def _options(path: tuple[str, ...]) -> dict[str, click.Parameter]:
    command = dict(_commands(typer.main.get_command(app)))[path]
    return {name: p for p in command.params for name in p.opts}


def test_every_option_of_every_command_has_help():
    missing = [f"{' '.join(path)} {p.opts[0]}" for path, command in _commands(typer.main.get_command(app))
               for p in command.params if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert not missing, missing


def test_the_lab_state_folder_has_one_name():
    for path in (("lab", "start"), ("study", "submit"), ("study", "status"), ("study", "stop")):
        options = _options(path)
        assert "--lab-state" in options and "--state" not in options, path


def test_sites_is_a_count_and_site_is_a_site_id():
    for path in (("synth",), ("study", "simulate")):
        assert isinstance(_options(path)["--sites"].type, (click.types.IntParamType, click.IntRange)), path
    provision = _options(("provision",))
    assert "--sites" not in provision and provision["--site"].multiple


@pytest.mark.parametrize("command", [["data", "check", "--site-config", "x.toml"], ["train-central"]])
def test_a_bad_preset_is_one_line_naming_the_choices(command):
    result = runner.invoke(app, [*command, "--preset", "huge"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "'huge'" in lines[0] and "cpu" in lines[0], result.output


def test_preset_help_lists_cpu():
    assert "cpu" in _options(("data", "check"))["--preset"].help
    assert "cpu" in _options(("train-central",))["--preset"].help


def test_study_run_writes_where_the_dashboard_reads():
    work = _options(("study", "run"))["--work"].default
    assert Path(_options(("dashboard",))["--db"].default) == Path(work) / "study.db"


def test_a_missing_lab_says_where_it_looked_and_how_to_point_at_the_lab(tmp_path):
    for command in (["study", "status"], ["study", "stop"], ["study", "submit", "--study", "studies/demo.toml"]):
        result = runner.invoke(app, [*command, "--lab-state", str(tmp_path / "elsewhere")])
        text = " ".join(result.output.split())
        assert result.exit_code == 2, (command, result.output)
        assert str(tmp_path / "elsewhere") in text and "--lab-state" in text, text


def test_study_status_prints_flowers_run_status(monkeypatch):
    import cardiacfl.lab

    monkeypatch.setattr(cardiacfl.lab, "study_status", lambda state: {
        "study": "demo", "id": 3, "status": "running", "phase": "finetune", "round": 2, "total_rounds": 4,
        "flower_run": {"id": 77, "status": "running"}})
    result = runner.invoke(app, ["study", "status"])
    assert result.exit_code == 0 and "Flower run 77: running" in " ".join(result.output.split()), result.output


def test_the_module_runs_every_command_including_the_ledger_ones():
    result = subprocess.run([sys.executable, "-m", "cardiacfl.cli", "site", "ledger", "verify", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--site-config" in result.stdout, result.stderr


def test_site_start_takes_the_kit_folder_as_well_as_the_archive(tmp_path):
    import stat

    from cardiacfl.hospital import unpack_kit
    from cardiacfl.provision import provision_study

    paths = provision_study(tmp_path / "kits", "s", "10.0.0.1", ["hospital-a"])
    for given, state in ((paths["kits"]["hospital-a"], tmp_path / "from-folder"),
                         (paths["archives"]["hospital-a"], tmp_path / "from-archive")):
        kit = unpack_kit(given, "hospital-a", state)
        assert kit["lab_address"] == "10.0.0.1:9092" and kit["key"].is_file()
        assert stat.S_IMODE(kit["key"].stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="not a hospital kit"):
        unpack_kit(tmp_path, "hospital-a", tmp_path / "state")
    with pytest.raises(ValueError, match="not a readable kit archive"):
        unpack_kit(tmp_path / "missing.tar.gz", "hospital-a", tmp_path / "state")


def test_site_start_with_a_file_that_is_no_kit_is_one_line_and_exit_2(tiny_cohort, tmp_path):
    junk = tmp_path / "kit.tar.gz"
    junk.write_text("not an archive")
    config = tiny_cohort / "site_configs" / "hospital-a.toml"
    result = runner.invoke(app, ["site", "start", "--kit", str(junk), "--site-config", str(config)])
    assert result.exit_code == 2 and "not a readable kit archive" in " ".join(result.output.split()), result.output


def test_site_status_and_app_hash_print_what_scripts_read(tiny_cohort, tmp_path, monkeypatch):
    import json

    from client.app_gate import app_hash
    from client.site_round import open_ledger
    from sitedata.site_config import load_site_config

    monkeypatch.setenv("CARDIACFL_STATE_DIR", str(tmp_path / "state"))
    config_path = tiny_cohort / "site_configs" / "hospital-a.toml"
    with open_ledger(load_site_config(config_path), locked=True) as ledger:
        ledger.record_decline(study="t", phase="finetune", server_round=1, reason="over budget")
    result = runner.invoke(app, ["site", "status", "--site-config", str(config_path), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout.strip().splitlines()[-1])
    assert status["site"] == "hospital-a" and status["epsilon"] == 0.0 and status["node"] == "not running"
    assert status["last_rounds"] == [{"what": "declined", "study": "t", "phase": "finetune", "round": 1, "reason": "over budget"}]
    printed = runner.invoke(app, ["app-hash", str(REPO)])
    assert printed.exit_code == 0 and printed.stdout.strip() == app_hash(REPO)
    assert runner.invoke(app, ["app-hash", str(tmp_path)]).exit_code == 2  # not an app folder
