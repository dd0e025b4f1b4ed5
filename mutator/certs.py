"""Certificates for the webhook: a CA and a serving certificate signed by it.

The serving certificate carries SANs for 127.0.0.1, localhost and the in-cluster Service names
(``<service>.<namespace>.svc`` and ``...svc.cluster.local``), so one set works locally and in a cluster.
The CA's PEM is what goes into the webhook configurations' ``caBundle``: ``ca_bundle`` encodes it,
``set_ca_bundle``/``patch_manifest_text`` put it into manifests, ``patch_webhook_configurations`` into the
objects in a cluster (``mutator certs --patch-files`` / ``--patch-webhooks``).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SERVICE = "mutator-webhook-service"
DEFAULT_NAMESPACE = "mutator-system"


@dataclass(frozen=True, slots=True)
class CertPaths:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> CertPaths:
        return cls(directory / "ca.crt", directory / "ca.key", directory / "tls.crt", directory / "tls.key")


def default_hosts(service: str = DEFAULT_SERVICE, namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    return [
        "127.0.0.1",
        "localhost",
        "::1",
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    if private:
        tmp.chmod(0o600)
    os.replace(tmp, path)  # atomic: a reloading server never reads half a file


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_certs(
    directory: Path,
    hosts: list[str] | None = None,
    *,
    days: int = 365,
    reuse_ca: bool = True,
) -> CertPaths:
    """Write ca.crt/ca.key (kept if present and reuse_ca) and a fresh tls.crt/tls.key signed by the CA."""
    paths = CertPaths.in_dir(directory)
    hosts = hosts or default_hosts()
    now = dt.datetime.now(dt.UTC)
    if reuse_ca and paths.ca_cert.exists() and paths.ca_key.exists():
        ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        loaded = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{paths.ca_key}: expected an EC private key")
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mutator-ca")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days * 10))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(paths.ca_key, _key_pem(ca_key), private=True)
        _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(paths.key, _key_pem(key), private=True)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
    return paths


# --- caBundle: the CA the API server trusts when it calls the webhook ---------------------------------------

WEBHOOK_CONFIGURATION_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
DEFAULT_VALIDATING_WEBHOOK = "mutator-validating-webhook-configuration"
DEFAULT_MUTATING_WEBHOOK = "mutator-mutating-webhook-configuration"


def ca_bundle(path: Path) -> str:
    """The ``caBundle`` value for a CA certificate file: base64 of its PEM, as the API server expects."""
    data = Path(path).read_bytes()
    try:
        x509.load_pem_x509_certificate(data)
    except ValueError as err:
        raise ValueError(f"{path}: not a PEM certificate ({err})") from err
    return base64.b64encode(data).decode("ascii")


def is_webhook_configuration(doc: object) -> bool:
    return (
        isinstance(doc, dict)
        and doc.get("kind") in WEBHOOK_CONFIGURATION_KINDS
        and str(doc.get("apiVersion", "")).startswith("admissionregistration.k8s.io/")
    )


def set_ca_bundle(doc: Any, bundle: str) -> Any:
    """A copy of ``doc`` with ``caBundle`` set in every webhook's ``clientConfig``.

    Only Validating/MutatingWebhookConfigurations change; any other document is returned as it is.
    """
    if not is_webhook_configuration(doc):
        return doc
    out = copy.deepcopy(doc)
    for webhook in out.get("webhooks") or []:
        webhook.setdefault("clientConfig", {})["caBundle"] = bundle
    return out


_CA_BUNDLE_LINE = re.compile(r"^(?P<indent>[ \t]*(?:- )?)caBundle:[^\n]*$", re.MULTILINE)


def patch_manifest_text(text: str, bundle: str) -> str:
    """``text`` (a multi-document YAML manifest) with ``caBundle`` set in its webhook configurations.

    When every webhook already has a ``caBundle:`` line and nothing else does, only those lines change, so
    comments and layout survive; otherwise the documents are written out again (comments are then lost).
    """
    docs = list(yaml.safe_load_all(text))
    wanted = [set_ca_bundle(doc, bundle) for doc in docs]
    if wanted == docs:
        return text
    replaced = _CA_BUNDLE_LINE.sub(lambda m: f"{m.group('indent')}caBundle: {bundle}", text)
    if replaced != text and list(yaml.safe_load_all(replaced)) == wanted:
        return replaced
    return yaml.safe_dump_all(wanted, sort_keys=False)


def patch_manifest_files(paths: list[Path], bundle: str) -> list[Path]:
    """Rewrite ``caBundle`` in local manifests (atomically); return the files that changed."""
    changed: list[Path] = []
    for path in paths:
        text = Path(path).read_text()
        new = patch_manifest_text(text, bundle)
        if new != text:
            _write(Path(path), new.encode())
            changed.append(Path(path))
    return changed


def kube_api_client(kubeconfig: str | None = None) -> Any:
    """An official ``kubernetes`` ApiClient: from ``kubeconfig`` when given, else in-cluster, else ~/.kube/config."""
    from .cluster.client import api_client

    return api_client(kubeconfig)


def patch_webhook_configurations(api_client: Any, names: dict[str, str], bundle: str) -> list[str]:
    """Patch ``caBundle`` into the named webhook configurations in a cluster.

    ``names`` maps a kind (``ValidatingWebhookConfiguration`` or ``MutatingWebhookConfiguration``) to the
    object's name; ``api_client`` is an official ``kubernetes`` ``ApiClient``. Every webhook of each object gets
    the bundle (a JSON patch per index, so other fields are untouched). Returns ``"<kind>/<name>"`` for each
    object patched; a missing object raises the client's ``ApiException`` (404).
    """
    from kubernetes import client as k8s

    api = k8s.AdmissionregistrationV1Api(api_client)
    calls = {
        "ValidatingWebhookConfiguration": (
            api.read_validating_webhook_configuration,
            api.patch_validating_webhook_configuration,
        ),
        "MutatingWebhookConfiguration": (
            api.read_mutating_webhook_configuration,
            api.patch_mutating_webhook_configuration,
        ),
    }
    done: list[str] = []
    for kind, name in names.items():
        if kind not in calls:
            raise ValueError(f"{kind}: not a webhook configuration kind ({', '.join(WEBHOOK_CONFIGURATION_KINDS)})")
        read, patch = calls[kind]
        for attempt in range(1, 4):
            current = read(name)
            ops = [
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
                for i in range(len(current.webhooks or []))
            ]
            if not ops:
                break
            # the object must still be the one read: a concurrent change fails the patch (and we read again),
            # so a bundle never lands on the wrong webhook
            unchanged = {"op": "test", "path": "/metadata/resourceVersion", "value": current.metadata.resource_version}
            try:
                patch(name, [unchanged, *ops])
                break
            except k8s.ApiException as err:
                if err.status in (401, 403, 404) or attempt == 3:
                    raise
        done.append(f"{kind}/{name}")
    return done
