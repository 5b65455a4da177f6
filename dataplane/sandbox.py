"""Everything a local AccessPoint needs, written into one state directory.

`prepare()` generates the certificate authorities, the gateway's serving certificate, the
snapshot signing key, the cluster credential, a signed snapshot and two kubeconfigs (a
client-certificate admin and a read-only token user). The quick start (`accesspoint up`) and the
end-to-end tests build their stacks from it, so both run the same configuration.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dataplane import signing
from dataplane.pki import CertificateAuthority
from dataplane.snapshot import sign_snapshot

ADMIN_USER = "alice"
ADMIN_GROUPS = ("devs",)
READONLY_USER = "bob"
READONLY_GROUPS = ("viewers",)

ROLES = [
    {"name": "cluster-admin", "rules": [
        {"verbs": ["*"], "api_groups": ["*"], "resources": ["*"],
         "resource_names": [], "namespaces": [], "non_resource_urls": []},
        {"verbs": ["*"], "api_groups": [], "resources": [],
         "resource_names": [], "namespaces": [], "non_resource_urls": ["*"]},
    ]},
    {"name": "viewer", "rules": [
        {"verbs": ["get", "list", "watch"], "api_groups": ["*"], "resources": ["*"],
         "resource_names": [], "namespaces": [], "non_resource_urls": []},
        # Discovery, /version and openapi: what every kubectl command reads first.
        {"verbs": ["get"], "api_groups": [], "resources": [],
         "resource_names": [], "namespaces": [], "non_resource_urls": ["*"]},
        # kubectl auth can-i: asking about oneself is harmless.
        {"verbs": ["create"], "api_groups": ["authorization.k8s.io"],
         "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
         "resource_names": [], "namespaces": [], "non_resource_urls": []},
    ]},
]


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster the gateway will route to, with the credential it presents there."""
    name: str
    endpoint: str
    ca_pem: bytes
    token: str | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    labels: dict[str, str] = field(default_factory=dict)


class StateLayout:
    """The files of one state directory, by name."""

    def __init__(self, root: Path):
        self.root = Path(root)
        pki, box = self.root / "pki", self.root / "sandbox"
        self.client_ca_cert, self.client_ca_key = pki / "client-ca.crt", pki / "client-ca.key"
        self.gateway_ca_cert = pki / "gateway-ca.crt"
        self.gateway_cert, self.gateway_key = pki / "gateway.crt", pki / "gateway.key"
        self.signing_key, self.signing_pub = pki / "snapshot-signing.key", pki / "snapshot-signing.pub"
        self.secrets_dir = self.root / "secrets"
        self.snapshot = self.root / "snapshot.json"
        self.audit_spool = self.root / "audit" / "spool.jsonl"
        self.kubeconfig = self.root / "kubeconfig"
        self.readonly_kubeconfig = self.root / "readonly.kubeconfig"
        self.sandbox_ca_cert = box / "ca.crt"
        self.sandbox_cert, self.sandbox_key = box / "server.crt", box / "server.key"
        self.sandbox_token = box / "gateway.token"
        self.sandbox_rbac = box / "rbac.json"
        self.redis_dir = self.root / "redis"
        self.controlplane_dir = self.root / "controlplane"
        self.api_admin_token = self.controlplane_dir / "admin.token"
        self.policy = self.root / "policy.yaml"
        self.apctl_config = self.root / "apctl.yaml"


def write_secret(path: Path, data: bytes) -> None:
    """Creates the file 0600 before anything is written to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(data)


def kubeconfig(server: str, ca_pem: bytes, user: str, *, token: str | None = None,
               cert_pem: bytes | None = None, key_pem: bytes | None = None, context: str) -> str:
    """A kubeconfig that vanilla kubectl uses as it is."""
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    user_entry: dict[str, str] = {"token": token} if token else {
        "client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user, "namespace": "default"}}],
        "current-context": context,
    }, sort_keys=False)


def cluster_from_kubeconfig(name: str, path: Path) -> ClusterSpec:
    """Registers a real cluster from its kubeconfig's current context (token or client cert)."""
    config = yaml.safe_load(Path(path).read_text())
    context_name = config.get("current-context")
    context = next((c["context"] for c in config.get("contexts", []) if c["name"] == context_name), None)
    if context is None:
        raise ValueError(f"{path}: no current-context")
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    base = Path(path).parent

    def data(entry: dict, key: str) -> bytes | None:
        if f"{key}-data" in entry:
            return base64.b64decode(entry[f"{key}-data"])
        if key in entry:
            return (base / entry[key]).read_bytes()
        return None

    ca = data(cluster, "certificate-authority")
    if ca is None:
        raise ValueError(f"{path}: the cluster has no certificate-authority; AccessPoint pins every cluster CA")
    token = user.get("token")
    cert, key = data(user, "client-certificate"), data(user, "client-key")
    if not token and not (cert and key):
        raise ValueError(f"{path}: the user needs a token or a client certificate (exec plugins are not supported)")
    return ClusterSpec(name=name, endpoint=cluster["server"], ca_pem=ca, token=token,
                       client_cert_pem=cert, client_key_pem=key, labels={"env": "dev"})


def _cluster_entry(spec: ClusterSpec, secrets_dir: Path) -> dict:
    if spec.token:
        write_secret(secrets_dir / f"{spec.name}.token", spec.token.encode())
        credential = {"kind": "token", "ref": f"file:{spec.name}.token"}
    else:
        write_secret(secrets_dir / f"{spec.name}.crt", spec.client_cert_pem)
        write_secret(secrets_dir / f"{spec.name}.key", spec.client_key_pem)
        credential = {"kind": "client_cert", "cert_ref": f"file:{spec.name}.crt", "key_ref": f"file:{spec.name}.key"}
    return {"name": spec.name, "labels": dict(spec.labels), "endpoint": spec.endpoint, "tunnel": False,
            "ca_bundle": spec.ca_pem.decode(), "credential": credential,
            "identity_mode": "impersonate", "kubectl_enabled": True}


BINDINGS = [
    {"name": "devs-admin", "role": "cluster-admin",
     "subjects": [{"kind": "group", "name": g} for g in ADMIN_GROUPS],
     "clusters": {"names": ["*"], "selector": {}}},
    {"name": "viewers-read", "role": "viewer",
     "subjects": [{"kind": "group", "name": g} for g in READONLY_GROUPS],
     "clusters": {"names": ["*"], "selector": {}}},
]


def policy_manifest(clusters: list[ClusterSpec], secrets_dir: Path) -> str:
    """The quick start's clusters, roles and bindings as an `apctl apply -f` manifest."""
    documents = [{"kind": "Cluster", **_cluster_entry(spec, secrets_dir)} for spec in clusters]
    documents += [{"kind": "Role", **role} for role in ROLES]
    documents += [{"kind": "Binding", **binding} for binding in BINDINGS]
    return yaml.safe_dump_all(documents, sort_keys=False)


def build_snapshot(clusters: list[dict], readonly_token: str, revision: int = 1,
                   revocations: dict | None = None) -> dict:
    return {
        "format": "accesspoint.snapshot/v1",
        "revision": revision,
        "issued_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "clusters": clusters,
        "roles": ROLES,
        "bindings": BINDINGS,
        "tokens": [{"id": "readonly-1", "sha256": hashlib.sha256(readonly_token.encode()).hexdigest(),
                    "user": READONLY_USER, "groups": list(READONLY_GROUPS), "component": None}],
        "revocations": revocations or {"users": [], "groups": [], "cert_serials": [], "token_ids": [], "sessions": []},
        "settings": {},
    }


def prepare_sandbox_cluster(state: StateLayout, endpoint: str) -> ClusterSpec:
    """Certificates, credential and RBAC for the local sandbox cluster (a fake API server)."""
    ca = CertificateAuthority.create("accesspoint sandbox cluster CA")
    state.sandbox_ca_cert.parent.mkdir(parents=True, exist_ok=True)
    state.sandbox_ca_cert.write_bytes(ca.cert_pem)
    ca.issue_server(["localhost", "127.0.0.1"]).write(state.sandbox_cert, state.sandbox_key)
    token = secrets.token_urlsafe(32)
    write_secret(state.sandbox_token, token.encode())
    # The sandbox's own RBAC (the second gate): the admin group may do anything, viewers read.
    state.sandbox_rbac.write_text(json.dumps({
        "users": {}, "groups": {**{g: "admin" for g in ADMIN_GROUPS}, **{g: "view" for g in READONLY_GROUPS}},
    }))
    return ClusterSpec(name="sandbox", endpoint=endpoint, ca_pem=ca.cert_pem, token=token,
                       labels={"env": "dev", "region": "local", "sandbox": "true"})


def prepare_pki(state: StateLayout) -> tuple[CertificateAuthority, CertificateAuthority]:
    """The client CA (kubeconfig certificates), the gateway's CA and serving certificate, and the
    snapshot signing key; returns (client CA, gateway CA)."""
    for sub in ("pki", "secrets", "audit"):
        (state.root / sub).mkdir(parents=True, exist_ok=True)
    client_ca = CertificateAuthority.create("accesspoint client CA")
    client_ca.write(state.client_ca_cert, state.client_ca_key)
    gateway_ca = CertificateAuthority.create("accesspoint gateway CA")
    state.gateway_ca_cert.write_bytes(gateway_ca.cert_pem)
    gateway_ca.issue_server(["localhost", "127.0.0.1"]).write(state.gateway_cert, state.gateway_key)
    signing_key = signing.generate_signing_key()
    signing.write_private_key(signing_key, state.signing_key)
    signing.write_public_key(signing_key.public_key(), state.signing_pub)
    return client_ca, gateway_ca


def prepare(root: Path, gateway_url: str, clusters: list[ClusterSpec]) -> StateLayout:
    """A gateway that serves from a signed snapshot file (no control plane): keys, certificates,
    the snapshot and both kubeconfigs under `root`."""
    state = StateLayout(Path(root))
    client_ca, gateway_ca = prepare_pki(state)
    readonly_token = secrets.token_urlsafe(32)
    entries = [_cluster_entry(spec, state.secrets_dir) for spec in clusters]
    snapshot = build_snapshot(entries, readonly_token)
    state.snapshot.write_bytes(sign_snapshot(snapshot, signing.load_private_key(state.signing_key)))

    first = clusters[0].name
    admin = client_ca.issue_client(ADMIN_USER, ADMIN_GROUPS)
    write_secret(state.kubeconfig, kubeconfig(
        f"{gateway_url}/clusters/{first}", gateway_ca.cert_pem, ADMIN_USER,
        cert_pem=admin.cert_pem, key_pem=admin.key_pem, context=f"accesspoint-{first}").encode())
    write_secret(state.readonly_kubeconfig, kubeconfig(
        f"{gateway_url}/clusters/{first}", gateway_ca.cert_pem, READONLY_USER,
        token=readonly_token, context=f"accesspoint-{first}-readonly").encode())
    return state
