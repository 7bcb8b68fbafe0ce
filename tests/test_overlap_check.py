"""The lab's held-out panel and public data never share a subject with a site: by construction (each role its
own seed namespace) and, as a real study would check, by content before the study starts."""

import csv
import shutil

import pytest
from flwr.common import Context, RecordDict

from client.client_app import app
from server.overlap_check import PanelOverlap, ask_sites, lab_fingerprints, refuse_panel_overlap
from sitedata.site_config import load_site_config
from sitedata.site_data import prepare_site
from synthetic.cohort import generate_cohort


pytestmark = pytest.mark.usefixtures("server_task_identity")


class InProcessGrid:
    """Flower's Grid as the ServerApp uses it, delivering each message to the real ClientApp of one site."""

    def __init__(self, site_configs):
        self.nodes = {100 + i: str(path) for i, path in enumerate(site_configs)}

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, timeout=None):
        for message in messages:
            node = message.metadata.dst_node_id
            context = Context(run_id=1, node_id=node, node_config={"site-config": self.nodes[node]},
                              state=RecordDict(), run_config={})
            yield app(message, context)


def _rename_subjects(manifest):
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{**row, "subject_id": f"lab-{i}"} for i, row in enumerate(rows)])


def _prepared(config):
    return prepare_site(load_site_config(config))


def _write_roles(root, seed):
    """The main job's three cohorts for one SEED (scripts/run_study.sh): sites, public pairs, panel."""
    sites = generate_cohort(root / "sites", n_sites=2, subjects=6, seed=seed, workers=1, role="sites")
    public = generate_cohort(root / "public", n_sites=2, subjects=6, seed=seed, workers=1, role="public")
    panel = generate_cohort(root / "panel", n_sites=1, subjects=6, seed=seed, workers=1, role="panel")
    return sites, public, panel[0]


@pytest.mark.parametrize("seed", [92, 99])  # the seeds that once made the panel a copy of site or public data
def test_no_seed_makes_the_panel_or_public_data_a_site_s(tmp_path, seed):
    sites, public, panel = _write_roles(tmp_path, seed)
    fingerprints = lab_fingerprints(_prepared(panel), [_prepared(p) for p in public])
    assert len(fingerprints["panel"]) == 6 and len(fingerprints["public"]) == 12
    result = ask_sites(InProcessGrid(sites), fingerprints)
    assert result.counts == {"hospital-a": {"panel": 0, "public": 0}, "hospital-b": {"panel": 0, "public": 0}}
    assert result.unchecked == []
    refuse_panel_overlap(result)  # the study may start


def test_a_panel_that_copies_a_site_s_records_stops_the_study(tmp_path, tiny_dp_study):
    """What SEED=99 used to do: the lab's panel is hospital-a's data under another folder and other names."""
    from server.study_config import load_study_config
    from server.study_run import StudyRun
    from rundb.queries import latest_study

    sites = generate_cohort(tmp_path / "cohort", n_sites=3, subjects=6, seed=4, workers=1)
    shutil.copytree(tmp_path / "cohort", tmp_path / "lab")
    _rename_subjects(tmp_path / "lab" / "hospital-a" / "manifest.csv")
    panel_config = tmp_path / "lab" / "site_configs" / "hospital-a.toml"
    usable = len(_prepared(panel_config).subjects)

    result = ask_sites(InProcessGrid(sites), lab_fingerprints(_prepared(panel_config)))
    assert result.counts["hospital-a"]["panel"] == usable and result.counts["hospital-b"]["panel"] == 0
    assert set(result.counts["hospital-a"]) == {"panel", "public"}  # counts only leave the site

    (tmp_path / "study.toml").write_text(tiny_dp_study("overlap", 1))
    run = StudyRun(load_study_config(tmp_path / "study.toml"), db=str(tmp_path / "run.db"), out=tmp_path / "out",
                   panel_config=str(panel_config))
    with pytest.raises(PanelOverlap, match=f"hospital-a holds {usable}"):
        run.run(InProcessGrid(sites), None)
    study = latest_study(run.db.engine)
    assert study.status == "failed" and "overlaps site data" in study.status_reason
    assert study.config["overlap_check"]["counts"]["hospital-a"]["panel"] == usable
    assert not list((tmp_path / "out").rglob("*.pt"))  # no round ran


@pytest.mark.parametrize("signal_as", [KeyboardInterrupt, lambda: SystemExit(0)], ids=["SIGINT", "SIGTERM"])
def test_a_serverapp_stopped_by_a_signal_leaves_its_study_resumable_not_failed(tmp_path, tiny_cohort, tiny_dp_study,
                                                                               monkeypatch, signal_as):
    """A lab container stopped mid-study: the ServerApp sees SIGINT as KeyboardInterrupt and SIGTERM as Flower's
    sys.exit(0), and marked the study "failed: SystemExit: 0"; it is an interruption that `study submit --resume`
    continues."""
    from rundb.queries import latest_study, resumable_study
    from server.study_config import load_study_config
    from server.study_run import StudyRun

    (tmp_path / "study.toml").write_text(tiny_dp_study("stopped", 2))
    run = StudyRun(load_study_config(tmp_path / "study.toml"), db=str(tmp_path / "run.db"), out=tmp_path / "out")

    def stopped(*_args):
        raise signal_as()

    monkeypatch.setattr(run, "run_phase", stopped)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run.run(InProcessGrid({}), None)
    study = latest_study(run.db.engine)
    assert study.status == "interrupted" and "--resume" in study.status_reason
    assert resumable_study(run.db.engine, "stopped") == study.id
