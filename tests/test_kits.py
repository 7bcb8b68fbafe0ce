"""Study kits: the lab's kit names the lab's address, each hospital gets one archive with only what it needs,
re-provisioning adds a site without invalidating the others, and a revoked site's key leaves the lab's list."""

import io
import stat
import tarfile

import pytest
from cryptography import x509

from cardiacfl.cli import app
from cardiacfl.provision import provision_study, revoke
from typer.testing import CliRunner


def test_kits_name_the_lab_and_hold_only_what_a_site_needs(tmp_path):
    paths = provision_study(tmp_path, "s1", "10.200.0.1:9092", ["hospital-a", "hospital-b"])
    cert = x509.load_pem_x509_certificate(paths["superlink_cert"].read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.200.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    with tarfile.open(paths["archives"]["hospital-a"]) as tar:
        members = {m.name: m for m in tar.getmembers()}
    names = {n.split("/", 1)[1] for n in members if "/" in n}
    assert names == {"ca.crt", "hospital-a.key", "hospital-a.pub", "kit.toml", "site-config.toml", "README.txt"}
    assert stat.S_IMODE(members["hospital-a/hospital-a.key"].mode) == 0o600
    assert stat.S_IMODE(paths["archives"]["hospital-a"].stat().st_mode) == 0o600
    assert 'lab_address = "10.200.0.1:9092"' in (paths["kits"]["hospital-a"] / "kit.toml").read_text()
    assert "10.200.0.1:9092" in (paths["kits"]["hospital-a"] / "README.txt").read_text()


def test_adding_a_site_keeps_the_others_valid_and_revoking_removes_a_key(tmp_path):
    first = provision_study(tmp_path, "s1", "lab.example.org", ["hospital-a"])
    ca_before = first["ca"].read_bytes()
    key_before = (first["kits"]["hospital-a"] / "hospital-a.key").read_bytes()
    second = provision_study(tmp_path, "s1", "lab.example.org", ["hospital-a", "hospital-b"])
    assert second["ca"].read_bytes() == ca_before
    assert (second["kits"]["hospital-a"] / "hospital-a.key").read_bytes() == key_before
    assert sorted(p.name for p in (tmp_path / "lab" / "site-keys").iterdir()) == ["hospital-a.pub", "hospital-b.pub"]
    ca = x509.load_pem_x509_certificate(ca_before)
    x509.load_pem_x509_certificate(second["superlink_cert"].read_bytes()).verify_directly_issued_by(ca)

    revoke(tmp_path, "hospital-b")
    assert sorted(p.name for p in (tmp_path / "lab" / "site-keys").iterdir()) == ["hospital-a.pub"]
    assert (tmp_path / "lab" / "revoked.txt").read_text().startswith("hospital-b\t")


def test_the_provision_command_writes_kits_and_revokes(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["provision", "--study", "s1", "--lab-address", "10.200.0.1", "--site", "hospital-a",
                                 "--site", "hospital-b", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kits" / "hospital-b.tar.gz").is_file() and "10.200.0.1:9092" in result.output
    result = runner.invoke(app, ["provision", "revoke", "--site", "hospital-b", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "lab" / "site-keys" / "hospital-b.pub").exists()



@pytest.mark.parametrize("python_has_data_filter", [True, False], ids=["data-filter", "python-3.11.2"])
def test_a_kit_unpacks_on_any_311_and_an_archive_that_writes_outside_is_refused(tmp_path, monkeypatch, python_has_data_filter):
    """Debian bookworm's Python 3.11.2 has no tarfile filter: the hand-made check must refuse the same archives."""
    from cardiacfl.hospital import unpack_kit

    if not python_has_data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    paths = provision_study(tmp_path / "kits", "s1", "lab:9092", ["hospital-a"])
    kit = unpack_kit(paths["archives"]["hospital-a"], "hospital-a", tmp_path / "state")
    assert kit["lab_address"] == "lab:9092" and stat.S_IMODE(kit["key"].stat().st_mode) == 0o600
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        payload = tarfile.TarInfo("hospital-a/../../escaped.txt")
        payload.size = 4
        tar.addfile(payload, io.BytesIO(b"evil"))
    with pytest.raises(ValueError, match="not a readable kit archive"):
        unpack_kit(evil, "hospital-a", tmp_path / "state2")
    assert not (tmp_path / "escaped.txt").exists()
