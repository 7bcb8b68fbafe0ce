"""The lab's network surface, on a real SuperLink and Fleet gateway on loopback: an outsider holding only the
study's CA certificate (as every hospital kit does) can neither list runs, register its own SuperNode key,
submit an app, nor join with an unregistered key; a registered site still joins through the gateway.

Before the gateway, the SuperLink's Control API shared the Fleet port with no login of its own."""

import json
import subprocess
import time
from pathlib import Path

import pytest

from cardiacfl.deployment import Processes, flower_environment, flwr, free_port, register_site, start_lab
from cardiacfl.provision import provision

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("lab")
    pki = provision(work / "pki", ["hospital-a", "hospital-r", "rogue"])
    lab_home, outsider_home = work / "lab-home", work / "outsider-home"
    superlink_port, fleet_port = free_port(), free_port()
    for home, port in ((lab_home, superlink_port), (outsider_home, fleet_port)):
        home.mkdir()
        (home / "config.toml").write_text(f'[superlink.study]\naddress = "127.0.0.1:{port}"\nroot-certificates = "{pki["ca"]}"\n')
    processes = Processes()
    try:
        lab_env = flower_environment(lab_home)
        start_lab(processes, pki, lab_env, work / "logs", superlink_port=superlink_port, fleet_listen=f"127.0.0.1:{fleet_port}")
        node_id = register_site(str(pki["site_keys"]["hospital-a"]), "hospital-a", lab_env)
        revoked_node = register_site(str(pki["site_keys"]["hospital-r"]), "hospital-r", lab_env)
        yield dict(pki=pki, work=work, lab_env=lab_env, outsider_env=flower_environment(outsider_home),
                   fleet_port=fleet_port, node_id=node_id, revoked_node=revoked_node, processes=processes)
    finally:
        processes.stop()  # every process this fixture started, by PID


def _outsider(lab, args):
    with pytest.raises(RuntimeError) as refused:
        flwr(args, lab["outsider_env"])
    return str(refused.value)


def test_an_outsider_with_the_ca_cannot_use_the_control_api(lab):
    assert "403 Forbidden" in _outsider(lab, ["ls", "study"])
    assert "403 Forbidden" in _outsider(lab, ["supernode", "register", str(lab["pki"]["site_keys"]["rogue"]), "study",
                                              "--name", "rogue"])
    assert "403 Forbidden" in _outsider(lab, ["run", str(REPO), "study"])
    # Nothing the outsider tried reached the SuperLink: the lab (on loopback) sees one registered site and no run.
    nodes = json.loads(flwr(["supernode", "list", "study", "--format", "json"], lab["lab_env"]))["nodes"]
    assert sorted(int(n["node-id"]) for n in nodes) == sorted([lab["node_id"], lab["revoked_node"]])
    assert json.loads(flwr(["ls", "study", "--format", "json"], lab["lab_env"]))["runs"] == []


def _supernode(lab, site, name):
    kit = lab["pki"]["kits"][site]
    return lab["processes"].start(name, ["flower-supernode", "--superlink", f"127.0.0.1:{lab['fleet_port']}", "--port", str(free_port()),
                                         "--root-certificates", str(kit / "ca.crt"), "--auth-supernode-private-key", str(kit / f"{site}.key"),
                                         "--max-retries", "0"],
                                  lab["lab_env"], lab["work"] / "logs" / f"{name}.log")


def test_an_unregistered_key_cannot_join_and_a_registered_site_can(lab):
    rogue = _supernode(lab, "rogue", "rogue supernode")
    try:
        assert rogue.wait(timeout=60) != 0  # "Failed to activate SuperNode": its key was never registered
    except subprocess.TimeoutExpired:
        pytest.fail("a SuperNode with an unregistered key kept running")
    _supernode(lab, "hospital-a", "hospital-a supernode")
    deadline = time.time() + 60
    while time.time() < deadline:
        listed = json.loads(flwr(["supernode", "list", "study", "--format", "json"], lab["lab_env"]))["nodes"]
        if any(n["status"] == "online" for n in listed):
            return
        time.sleep(1)
    pytest.fail(f"the registered site did not come online through the gateway: {listed}")


def _node_status(lab, node_id: int) -> str:
    listed = json.loads(flwr(["supernode", "list", "study", "--format", "json"], lab["lab_env"]))["nodes"]
    return next((n["status"] for n in listed if int(n["node-id"]) == node_id), "absent")


def test_a_revoked_site_is_refused_by_the_running_lab_and_never_offered_a_study(lab, tmp_path):
    """Before: after `provision revoke` the revoked node stayed online, got tasks and stayed in lab.json (so a new
    study included it); the lab's unregistering matched an owner name that Flower reports as "none"."""
    from cardiacfl.lab import STATE_FILE, apply_revocations
    from cardiacfl.provision import revoke

    node = lab["revoked_node"]
    supernode = _supernode(lab, "hospital-r", "hospital-r supernode")
    deadline = time.time() + 60
    while _node_status(lab, node) != "online":
        assert time.time() < deadline, "the site to be revoked never came online"
        time.sleep(1)
    state = tmp_path / "lab-state"  # what the running lab's state folder holds
    state.mkdir()
    (state / STATE_FILE).write_text(json.dumps({"site_nodes": {"hospital-a": lab["node_id"], "hospital-r": node}}))
    assert apply_revocations(lab["pki"]["lab"], state, lab["lab_env"]) == []  # nothing revoked yet
    revoke(lab["pki"]["lab"].parent, "hospital-r")
    assert apply_revocations(lab["pki"]["lab"], state, lab["lab_env"], status=lambda _: None) == ["hospital-r"]
    assert json.loads((state / STATE_FILE).read_text())["site_nodes"] == {"hospital-a": lab["node_id"]}
    assert _node_status(lab, node) == "unregistered"  # at once, no restart: the SuperLink refuses the node
    try:  # and the revoked SuperNode, refused by the SuperLink, stops
        supernode.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the revoked SuperNode kept running")
