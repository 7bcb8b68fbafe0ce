"""Study provisioning with `cryptography`: a study CA, the SuperLink's TLS certificate (SAN localhost and
127.0.0.1 plus any given host names), and one SuperNode authentication key pair per site.

Layout of `out`:
    server/ ca.crt, ca.key, superlink.crt, superlink.key, site-keys/<site>.pub   (the lab keeps these)
    sites/<site>/ ca.crt, <site>.key, <site>.pub                                  (one kit per hospital)
Private keys are written with mode 0600 and live outside the Flower app, so they are never bundled into it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
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


def provision(out: Path, sites: list[str], *, hosts: tuple[str, ...] = ()) -> dict:
    """Write the study's keys and certificates; returns the paths a deployment needs."""
    server = out / "server"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CardiacNets study CA")])
    ca_cert = _certificate("CardiacNets study CA", ca_key.public_key(), ca_name, ca_key, ca=True)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    _write_private(server / "ca.key", _pem_key(ca_key))
    _write_public(server / "ca.crt", ca_pem)

    link_key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    sans += [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts]
    link_cert = _certificate("superlink", link_key.public_key(), ca_name, ca_key, ca=False, sans=sans)
    _write_private(server / "superlink.key", _pem_key(link_key))
    _write_public(server / "superlink.crt", link_cert.public_bytes(serialization.Encoding.PEM))

    kits = {}
    for site in sites:
        kit = out / "sites" / site
        key = ec.generate_private_key(ec.SECP256R1())  # a NIST curve, as SuperNode authentication requires
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        _write_private(kit / f"{site}.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                              serialization.NoEncryption()))
        _write_public(kit / f"{site}.pub", public + b"\n")
        _write_public(server / "site-keys" / f"{site}.pub", public + b"\n")
        _write_public(kit / "ca.crt", ca_pem)
        kits[site] = kit
    return {"ca": server / "ca.crt", "superlink_cert": server / "superlink.crt", "superlink_key": server / "superlink.key",
            "site_keys": {s: server / "site-keys" / f"{s}.pub" for s in sites}, "kits": kits}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
