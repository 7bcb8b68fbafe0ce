"""Study provisioning with `cryptography`: a study CA, the SuperLink's TLS certificate (SANs for the lab's
address, localhost and 127.0.0.1), and one SuperNode authentication key pair per site, as kits.

Layout of `out`:
    lab/   ca.crt, ca.key, superlink.crt, superlink.key, site-keys/<site>.pub, lab.toml, revoked.txt
           (the lab's kit: it never leaves the lab)
    sites/<site>/  ca.crt, <site>.key, <site>.pub, kit.toml, site-config.toml, README.txt  (one hospital's kit)
    kits/<site>.tar.gz  (that folder as one archive to hand over)
Re-running with more sites adds their kits and keeps the CA, the other sites' keys and kits valid; `revoke`
takes a site's key off the lab's list. Private keys are written 0600 and live outside the Flower app, so they
are never bundled into it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tarfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 365


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)  # also when the file existed with wider permissions


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _certificate(subject: str, public_key, issuer: x509.Name, signing_key, *, ca: bool, sans: list | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


DEFAULT_FLEET_PORT = 9092


def split_address(address: str) -> tuple[str, int]:
    """'host[:port]' -> (host, port); the Fleet gateway's port by default. IPv6 literals go in brackets."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest.lstrip(":") or DEFAULT_FLEET_PORT)
    host, _, port = address.partition(":")
    return host, int(port or DEFAULT_FLEET_PORT)


def provision_study(out: Path, study: str, lab_address: str, sites: list[str], *, extra_hosts: tuple[str, ...] = ()) -> dict:
    """Write or extend a study's kits (layout above); returns the paths a deployment needs."""
    host, port = split_address(lab_address)
    lab = out / "lab"
    ca_key, ca_cert = _study_ca(lab)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    ca_name = ca_cert.subject
    # The SuperLink certificate names the lab's address; reissued every time (sites trust the CA, not this file).
    link_key = ec.generate_private_key(ec.SECP256R1())
    hosts = dict.fromkeys(["localhost", "127.0.0.1", host, *extra_hosts])
    sans = [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts]
    link_cert = _certificate("superlink", link_key.public_key(), ca_name, ca_key, ca=False, sans=sans)
    _write_private(lab / "superlink.key", _pem_key(link_key))
    _write_public(lab / "superlink.crt", link_cert.public_bytes(serialization.Encoding.PEM))
    _write_public(lab / "lab.toml", f'[lab]\nstudy = "{study}"\naddress = "{host}:{port}"\n'.encode())

    kits = {}
    for site in sites:
        kit = out / "sites" / site
        if not (kit / f"{site}.key").is_file():  # an existing site keeps its key: its kit stays valid
            key = ec.generate_private_key(ec.SECP256R1())  # a NIST curve, as SuperNode authentication requires
            public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            _write_private(kit / f"{site}.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                                  serialization.NoEncryption()))
            _write_public(kit / f"{site}.pub", public + b"\n")
        _write_public(lab / "site-keys" / f"{site}.pub", (kit / f"{site}.pub").read_bytes())
        _write_public(kit / "ca.crt", ca_pem)
        _write_public(kit / "kit.toml", f'[kit]\nsite = "{site}"\nstudy = "{study}"\nlab_address = "{host}:{port}"\n'.encode())
        _write_public(kit / "site-config.toml", SITE_CONFIG_TEMPLATE.format(site=site).encode())
        _write_public(kit / "README.txt", HOSPITAL_README.format(site=site, study=study, host=host, port=port).encode())
        archive = out / "kits" / f"{site}.tar.gz"
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz") as tar:  # modes travel with the files: the key stays 0600
            tar.add(kit, arcname=site)
        os.chmod(archive, 0o600)
        kits[site] = kit
    return {"ca": lab / "ca.crt", "superlink_cert": lab / "superlink.crt", "superlink_key": lab / "superlink.key",
            "site_keys": {s: lab / "site-keys" / f"{s}.pub" for s in sites}, "kits": kits,
            "archives": {s: out / "kits" / f"{s}.tar.gz" for s in sites}, "lab": lab}


def revoke(out: Path, site: str) -> None:
    """Take a site's key off the lab's list, recorded in lab/revoked.txt: a running lab unregisters the site's
    node within a second (cardiacfl/lab.apply_revocations), and a restarted one never registers the key."""
    key = out / "lab" / "site-keys" / f"{site}.pub"
    if not key.is_file():
        raise FileNotFoundError(f"{key}: no key for site {site!r} in this lab kit")
    revoked = out / "lab" / "revoked.txt"
    with revoked.open("a") as handle:
        handle.write(f"{site}\t{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}\t{key.read_text().strip()}\n")
    key.unlink()


def provision(out: Path, sites: list[str], *, hosts: tuple[str, ...] = ()) -> dict:
    """Kits for a study whose lab and sites share this machine (`study run`)."""
    return provision_study(out, "local", "127.0.0.1", sites, extra_hosts=hosts)


def _study_ca(lab: Path):
    """The study's CA: made once, then read back, so that re-provisioning keeps every kit valid."""
    if (lab / "ca.key").is_file() and (lab / "ca.crt").is_file():
        return (load_pem_private_key((lab / "ca.key").read_bytes(), password=None),
                x509.load_pem_x509_certificate((lab / "ca.crt").read_bytes()))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CardiacNets study CA")])
    ca_cert = _certificate("CardiacNets study CA", ca_key.public_key(), ca_name, ca_key, ca=True)
    _write_private(lab / "ca.key", _pem_key(ca_key))
    _write_public(lab / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    return ca_key, ca_cert


SITE_CONFIG_TEMPLATE = """# Site config for {site}. Paths are relative to this file; README "Site configs" lists every key.
[site]
id = "{site}"
data_root = "/data/{site}"       # the folder with manifest.csv and the files it names (read-only is fine)
manifest = "manifest.csv"
modalities = ["ecg", "cmr"]      # ["ecg"] for an ECG-only site

[privacy]
target_epsilon = 8.0             # this site's lifetime budget, over every round, phase and restart
target_delta = 1e-5
"""

HOSPITAL_README = """CardiacNets federated study "{study}": kit for {site}
=====================================================

What this is: the credentials your hospital's node needs to take part. Keep {site}.key private (mode 0600);
it proves to the coordinating lab that you are {site}.

1. Describe your data: copy site-config.toml, set data_root to the folder with manifest.csv (README "Site
   data"), then check it:      cardiacfl data check --site-config site-config.toml
2. Approve the study's app:    cardiacfl site approve HASH --site-config site-config.toml
   (HASH: the SHA-256 the lab prints when it submits the study, or give the app's FAB file or source folder;
   your node refuses every other app before any of its code runs)
3. Start the node:             cardiacfl site start --kit {site}.tar.gz --site-config site-config.toml
   (or the container docker/site.Dockerfile, with the data and this kit mounted read-only)
4. See what it has done:       cardiacfl site status --site-config site-config.toml

Network: the node opens one outbound TLS connection to the lab, {host}:{port}. Nothing connects to your hospital;
no inbound port is needed.

What leaves your site: model updates (masked by secure aggregation, noised by your own DP-SGD within your own
privacy budget) and aggregate metrics (counts, validation loss and AUROC/R2 only above privacy.min_eval_count
patients, the privacy spent; no exact training loss). What never leaves: ECGs, images, manifests, identifiers, per-patient predictions, your privacy
ledger and your DP noise. A round asking for less privacy than your config allows is declined.
"""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
