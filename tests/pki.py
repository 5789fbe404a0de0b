"""A throwaway PKI for TLS tests: a CA, a server certificate for 127.0.0.1 and localhost, a
client certificate, and a client certificate from another CA. EC P-256 keys, made in
milliseconds."""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Dict, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(subject: str, key, issuer: Optional[Tuple[x509.Certificate, object]], *,
          ca: bool = False, server: bool = False, client: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name = _name(subject) if issuer is None else issuer[0].subject
    signing_key = key if issuer is None else issuer[1]
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            signing_key.public_key()), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_pki(directory: str) -> Dict[str, str]:
    """Write the PKI's PEM files into directory; returns {name: path}.

    Names: ca, server_cert, server_key, client_cert, client_key, stranger_cert, stranger_key
    (a client certificate signed by a CA nobody trusts).
    """
    files: Dict[str, str] = {}

    def write(name: str, data: bytes) -> None:
        path = os.path.join(directory, f"{name}.pem")
        with open(path, "wb") as f:
            f.write(data)
        files[name] = path

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def cert_pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("boto-prom test CA", ca_key, None, ca=True)
    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _cert("untrusted CA", other_ca_key, None, ca=True)
    write("ca", cert_pem(ca))
    for name, issuer, kind in (("server", (ca, ca_key), dict(server=True)),
                               ("client", (ca, ca_key), dict(client=True)),
                               ("stranger", (other_ca, other_ca_key), dict(client=True))):
        key = ec.generate_private_key(ec.SECP256R1())
        write(f"{name}_cert", cert_pem(_cert(f"{name}.test", key, issuer, **kind)))
        write(f"{name}_key", key_pem(key))
    return files
