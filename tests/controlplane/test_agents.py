"""Agent registration: a tunnel cluster's bootstrap token buys one agent certificate (the agent's own
key, signed by the control plane's agent CA), whose key the snapshot's `agent_identities` then
lists; renewal adds the new key; revocation, expiry and deregistration take keys away. Every
refused enrollment or renewal is a gRPC error with a clear message and a row of the refusal audit."""
from __future__ import annotations

import asyncio
import datetime
import json
import stat
import threading

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane.agentca import AgentAuthority, new_bootstrap_token
from controlplane.api.v1 import (agents_pb2, agents_pb2_grpc, clusters_pb2, clusters_pb2_grpc, revocations_pb2,
                                 revocations_pb2_grpc)
from controlplane.errors import PermissionDenied, Unauthenticated
from controlplane.model import Cluster, Credential, Role, Rule, utc_text
from controlplane.server import serve
from controlplane.snapshots import SNAPSHOT_KEY, build_snapshot
from controlplane.store import open_store
from controlplane.store.backends import backend_for
from controlplane.store.migrations import MIGRATIONS
from controlplane.store.store import Store
from dataplane import enrollment
from dataplane.pki import CertificateAuthority
from dataplane.snapshot import validate, verify_snapshot
from dataplane.tunnel.identities import allowed, certificate_identities, spki_sha256

from .planes import ADMIN, READER, plane_config
from .test_api import a_cluster

# The store's clock starts at the real time: the CA signs with the real time, and the store compares
# the certificates' expiry with its own.
T0 = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


class Clock:
    """The store's commit time, moved by the test (never by waiting)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> str:
        return utc_text(self.now)


def _register_tunnel(channel, name: str = "alpha", **fields) -> clusters_pb2.Cluster:
    request = clusters_pb2.RegisterClusterRequest(
        cluster=clusters_pb2.Cluster(name=name, tunnel=True, labels={"env": "edge"}), **fields)
    return clusters_pb2_grpc.ClusterServiceStub(channel).RegisterCluster(request, metadata=ADMIN)


def _agents(channel):
    return agents_pb2_grpc.AgentServiceStub(channel)


def _refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises((grpc.RpcError, enrollment.EnrollmentError)) as caught:
        call()
    exc = caught.value
    if isinstance(exc, enrollment.EnrollmentError):
        return exc.code, str(exc)
    return exc.code(), exc.details()


def _snapshot_cluster(plane, redis_client, signing_key, name: str = "alpha") -> dict:
    snapshot = verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key())
    assert snapshot.revision == plane.store.revision()
    entries = {c["name"]: c for c in snapshot.data["clusters"]}
    return entries[name]


def _refusals(channel, cluster: str = "") -> list[agents_pb2.Refusal]:
    return list(_agents(channel).ListRefusals(agents_pb2.ListRefusalsRequest(cluster=cluster),
                                              metadata=READER).refusals)


def test_register_enroll_and_the_snapshot_lists_the_agent_key(channel, plane, redis_client, signing_key, tmp_path):
    registered = _register_tunnel(channel)
    token = registered.bootstrap
    assert token.secret.startswith("apb_") and token.cluster == "alpha"
    lifetime = token.expires_at.ToDatetime(tzinfo=datetime.timezone.utc) - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(minutes=55) < lifetime <= datetime.timedelta(hours=1)
    # a tunnel cluster has no endpoint; the snapshot still passes the gateways' schema, with no agent yet
    entry = _snapshot_cluster(plane, redis_client, signing_key)
    assert entry["tunnel"] is True and entry["agent_identities"] == []
    assert clusters_pb2_grpc.ClusterServiceStub(channel).GetCluster(
        clusters_pb2.GetClusterRequest(name="alpha"), metadata=READER).endpoint == ""

    state = tmp_path / "agent"
    credentials = enrollment.enroll(_agents(channel), "alpha", token.secret, state)

    cert = credentials.cert
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(plane_agent_ca(plane)))
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name.startswith("agent:alpha:")
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    assert datetime.timedelta(hours=23) < cert.not_valid_after_utc - cert.not_valid_before_utc <= \
        datetime.timedelta(hours=24, minutes=5)
    # the key stayed with the agent: one 0600 file holds the certificate and its key
    assert stat.S_IMODE((state / enrollment.CREDENTIALS_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert (state / enrollment.GATEWAY_CA_FILE).read_bytes() == (tmp_path / "gateway-ca.crt").read_bytes()
    assert enrollment.load_credentials(state).serial == credentials.serial

    entry = _snapshot_cluster(plane, redis_client, signing_key)
    assert entry["agent_identities"] == [f"spki-sha256:{spki_sha256(cert)}"]
    assert allowed(certificate_identities(cert), entry["agent_identities"])
    listed = _agents(channel).ListAgentCertificates(agents_pb2.ListAgentCertificatesRequest(cluster="alpha"),
                                                    metadata=READER).certificates
    assert [(c.serial, c.common_name, c.live, c.enrolled_by) for c in listed] == \
        [(credentials.serial, common_name, True, f"bootstrap/{token.id}")]
    assert [e.action for e in plane.store.audit()][-2:] == ["clusters.create", "agents.enroll"]
    assert _refusals(channel) == []


def plane_agent_ca(plane) -> bytes:
    return plane.config.agent_authority().ca_pem


def test_token_reuse_another_clusters_token_and_unknown_tokens_are_refused_and_audited(channel, plane, tmp_path):
    alpha = _register_tunnel(channel, "alpha").bootstrap
    beta = _register_tunnel(channel, "beta").bootstrap
    enrollment.enroll(_agents(channel), "alpha", alpha.secret, tmp_path / "a1")
    revision = plane.store.revision()

    cases = [
        ("alpha", alpha.secret, grpc.StatusCode.UNAUTHENTICATED, f"bootstrap token {alpha.id} was already used",
         f"bootstrap/{alpha.id}"),
        ("alpha", beta.secret, grpc.StatusCode.PERMISSION_DENIED,
         f"bootstrap token {beta.id} is not one of cluster 'alpha'", f"bootstrap/{beta.id}"),
        ("alpha", "apb_" + "x" * 43, grpc.StatusCode.UNAUTHENTICATED, "unknown bootstrap token",
         "unknown bootstrap token"),
    ]
    for cluster, secret, code, message, _ in cases:
        got = _refusal(lambda: enrollment.enroll(_agents(channel), cluster, secret, tmp_path / "other"))
        assert got[0] == code and message in got[1], got
        assert secret not in got[1]
    assert not (tmp_path / "other" / enrollment.CREDENTIALS_FILE).exists()
    assert plane.store.revision() == revision          # a refusal changes no state

    refusals = list(reversed(_refusals(channel, "alpha")))
    assert [(r.action, r.subject) for r in refusals] == [("agents.enroll", subject) for *_, subject in cases]
    assert all(message in r.reason for r, (_, _, _, message, _) in zip(refusals, cases))
    assert all(r.peer for r in refusals)
    assert all(alpha.secret not in r.reason and beta.secret not in r.reason for r in refusals)
    # beta's token was not spent by the refused attempt
    enrollment.enroll(_agents(channel), "beta", beta.secret, tmp_path / "b1")


def test_expired_bootstrap_token_is_refused_and_audited(tmp_path, redis_url, redis_client, signing_key):
    clock = Clock()
    plane = serve(plane_config(tmp_path, redis_url, signing_key), clock=clock)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{plane.port}") as channel:
            token = _register_tunnel(channel, bootstrap_ttl=_seconds(600)).bootstrap
            assert token.expires_at.ToDatetime(tzinfo=datetime.timezone.utc) == T0 + datetime.timedelta(minutes=10)
            clock.now = T0 + datetime.timedelta(minutes=10)
            code, message = _refusal(lambda: enrollment.enroll(_agents(channel), "alpha", token.secret, tmp_path / "s"))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert f"bootstrap token {token.id} expired at {utc_text(clock.now)}" in message
            assert "apctl cluster bootstrap alpha" in message
            [refusal] = _refusals(channel)
            assert (refusal.subject, refusal.reason) == (f"bootstrap/{token.id}", message.split(": ", 1)[1])
            # a fresh token works
            fresh = _agents(channel).IssueBootstrapToken(agents_pb2.IssueBootstrapTokenRequest(cluster="alpha"),
                                                         metadata=ADMIN)
            enrollment.enroll(_agents(channel), "alpha", fresh.secret, tmp_path / "s")
    finally:
        plane.stop(1)


def _seconds(value: int) -> Duration:
    return Duration(seconds=value)


def test_renewal_adds_the_new_key_and_revocation_removes_one(channel, plane, redis_client, signing_key, tmp_path):
    token = _register_tunnel(channel).bootstrap
    state = tmp_path / "agent"
    first = enrollment.enroll(_agents(channel), "alpha", token.secret, state)
    second = enrollment.renew(_agents(channel), state)

    assert second.serial != first.serial
    assert spki_sha256(second.cert) != spki_sha256(first.cert)          # a fresh key
    name = [a.value for a in first.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    assert [a.value for a in second.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == name
    assert enrollment.load_credentials(state).serial == second.serial
    entry = _snapshot_cluster(plane, redis_client, signing_key)
    # the old certificate still serves its live tunnels until it expires or is revoked
    assert entry["agent_identities"] == sorted(f"spki-sha256:{spki_sha256(c.cert)}" for c in (first, second))

    revocations_pb2_grpc.RevocationServiceStub(channel).Revoke(
        revocations_pb2.RevokeRequest(kind="cert_serial", value=first.serial, reason="rotated"), metadata=ADMIN)
    entry = _snapshot_cluster(plane, redis_client, signing_key)
    assert entry["agent_identities"] == [f"spki-sha256:{spki_sha256(second.cert)}"]

    # the revoked certificate cannot renew, even with its key
    old = tmp_path / "old"
    enrollment.store_credentials(old, first.key, _answer(first))
    code, message = _refusal(lambda: enrollment.renew(_agents(channel), old))
    assert code == grpc.StatusCode.PERMISSION_DENIED and f"certificate {first.serial} is revoked" in message
    [refusal] = _refusals(channel, "alpha")
    assert (refusal.action, refusal.subject) == ("agents.renew", f"certificate/{first.serial}")
    states = {c.serial: (c.live, c.revoked) for c in _agents(channel).ListAgentCertificates(
        agents_pb2.ListAgentCertificatesRequest(), metadata=READER).certificates}
    assert states == {first.serial: (False, True), second.serial: (True, False)}


def _answer(credentials: enrollment.Credentials) -> agents_pb2.AgentCredentials:
    return agents_pb2.AgentCredentials(certificate_pem=credentials.cert.public_bytes(serialization.Encoding.PEM))


def test_renewal_after_deregistration_is_refused_even_for_a_namesake(channel, plane, redis_client, signing_key,
                                                                     tmp_path):
    token = _register_tunnel(channel).bootstrap
    spare = _agents(channel).IssueBootstrapToken(agents_pb2.IssueBootstrapTokenRequest(cluster="alpha"),
                                                 metadata=ADMIN)
    state = tmp_path / "agent"
    enrolled = enrollment.enroll(_agents(channel), "alpha", token.secret, state)
    clusters_pb2_grpc.ClusterServiceStub(channel).DeregisterCluster(
        clusters_pb2.DeregisterClusterRequest(name="alpha"), metadata=ADMIN)

    code, message = _refusal(lambda: enrollment.renew(_agents(channel), state))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "cluster 'alpha' is not registered" in message

    _register_tunnel(channel)           # a new cluster under the old name owes the old agent nothing
    code, message = _refusal(lambda: enrollment.renew(_agents(channel), state))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "earlier registration of cluster 'alpha'" in message
    code, message = _refusal(lambda: enrollment.enroll(_agents(channel), "alpha", spare.secret, tmp_path / "x"))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "unknown bootstrap token" in message
    assert _snapshot_cluster(plane, redis_client, signing_key)["agent_identities"] == []
    assert [(r.action, r.subject) for r in reversed(_refusals(channel, "alpha"))] == [
        ("agents.renew", f"certificate/{enrolled.serial}"), ("agents.renew", f"certificate/{enrolled.serial}"),
        ("agents.enroll", "unknown bootstrap token")]


def test_renewal_must_prove_the_current_key(channel, plane, tmp_path):
    token = _register_tunnel(channel).bootstrap
    state = tmp_path / "agent"
    current = enrollment.enroll(_agents(channel), "alpha", token.secret, state)
    key = enrollment.new_key()
    csr = enrollment.make_csr(key)
    der = x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    cert_pem = current.cert.public_bytes(serialization.Encoding.PEM)

    def renew(signer, signed_at=now, certificate=cert_pem):
        stamp = Timestamp()
        stamp.FromDatetime(signed_at)
        proof = enrollment.renewal_proof(current.serial, signed_at, der)
        return _agents(channel).Renew(agents_pb2.RenewRequest(
            certificate=certificate, csr=csr, signed_at=stamp,
            signature=signer.sign(proof, ec.ECDSA(hashes.SHA256()))))

    stranger = CertificateAuthority.create("not the agent CA").issue_client("agent:alpha:x")
    for call, code, message in [
        (lambda: renew(enrollment.new_key()), grpc.StatusCode.UNAUTHENTICATED, "not signed by the certificate's key"),
        (lambda: renew(current.key, now - datetime.timedelta(minutes=10)), grpc.StatusCode.UNAUTHENTICATED,
         "away from the control plane's clock"),
        (lambda: renew(stranger.key, certificate=stranger.cert_pem), grpc.StatusCode.UNAUTHENTICATED,
         "not issued by this control plane's agent CA"),
    ]:
        got = _refusal(call)
        assert got[0] == code and message in got[1], got
    assert len(_refusals(channel)) == 3
    renewed = renew(current.key)       # the same request, properly signed, passes
    assert renewed.certificate.spki_sha256 == spki_sha256(
        x509.load_pem_x509_certificate(renewed.certificate_pem))


def test_who_may_call_what(channel, plane):
    direct = clusters_pb2_grpc.ClusterServiceStub(channel)
    direct.RegisterCluster(clusters_pb2.RegisterClusterRequest(cluster=a_cluster("direct")), metadata=ADMIN)
    assert not direct.GetCluster(clusters_pb2.GetClusterRequest(name="direct"), metadata=ADMIN).HasField("bootstrap")
    _register_tunnel(channel)
    agents = _agents(channel)
    for metadata, code in [(READER, grpc.StatusCode.PERMISSION_DENIED), ([], grpc.StatusCode.UNAUTHENTICATED)]:
        got = _refusal(lambda: agents.IssueBootstrapToken(agents_pb2.IssueBootstrapTokenRequest(cluster="alpha"),
                                                          metadata=metadata))
        assert got[0] == code
    got = _refusal(lambda: agents.IssueBootstrapToken(agents_pb2.IssueBootstrapTokenRequest(cluster="direct"),
                                                      metadata=ADMIN))
    assert got == (grpc.StatusCode.FAILED_PRECONDITION, "cluster 'direct' is not a tunnel cluster: it needs no agent")
    got = _refusal(lambda: direct.RegisterCluster(clusters_pb2.RegisterClusterRequest(
        cluster=a_cluster("other"), bootstrap_ttl=_seconds(60)), metadata=ADMIN))
    assert got[0] == grpc.StatusCode.INVALID_ARGUMENT and got[1].startswith("bootstrap_ttl:")
    # Enroll needs no API token, but its own proof; a malformed CSR is refused and audited too
    got = _refusal(lambda: agents.Enroll(agents_pb2.EnrollRequest(cluster="alpha", bootstrap_token="apb_x",
                                                                  csr=b"junk")))
    assert got[0] == grpc.StatusCode.INVALID_ARGUMENT and got[1].startswith("csr:")
    assert len(_refusals(channel)) == 1


# -- the store alone, on SQLite and PostgreSQL ------------------------------------------------------------

@pytest.fixture
def clocked_store(store_url):
    clock = Clock()
    opened = open_store(store_url, clock)
    yield opened, clock
    opened.close()


def _authority() -> AgentAuthority:
    return AgentAuthority(CertificateAuthority.create("agents"), b"", cert_ttl=3600, bootstrap_ttl=600)


def _sign(authority: AgentAuthority, cluster: str):
    csr = x509.load_pem_x509_csr(enrollment.make_csr(enrollment.new_key()))
    return authority.signer(csr, cluster)


def test_one_token_buys_one_certificate_even_when_agents_race(clocked_store):
    store, _ = clocked_store
    authority = _authority()
    token, secret = new_bootstrap_token("alpha")
    store.register_tunnel_cluster("test", Cluster(name="alpha", endpoint="", credential=Credential(kind=""),
                                                  tunnel=True), token, 600)
    results: list[object] = []
    barrier = threading.Barrier(4)

    def enroll() -> None:
        barrier.wait()
        try:
            results.append(store.enroll_agent(token.sha256, "alpha", _sign(authority, "alpha"))[0])
        except Unauthenticated as exc:
            results.append(exc)

    threads = [threading.Thread(target=enroll) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(results) == 4 and len(winners) == 1
    assert all("was already used" in str(r) for r in results if isinstance(r, Exception))
    assert [c.serial for c in store.agent_certificates()] == [winners[0].serial]
    [used] = store.bootstrap_tokens()
    assert used.used_by == winners[0].serial


def test_expiry_and_revocation_in_the_store(clocked_store):
    store, clock = clocked_store
    authority = _authority()
    token, _ = new_bootstrap_token("alpha")
    store.register_tunnel_cluster("test", Cluster(name="alpha", endpoint="", credential=Credential(kind=""),
                                                  tunnel=True), token, 600)
    clock.now = T0 + datetime.timedelta(seconds=599)
    issued, _ = store.enroll_agent(token.sha256, "alpha", _sign(authority, "alpha"))
    # the snapshot lists live certificates only: at their expiry (the store's clock) they drop out
    assert build_snapshot(store.state())["clusters"][0]["agent_identities"] == [f"spki-sha256:{issued.spki_sha256}"]
    validate(build_snapshot(store.state()))
    clock.now = datetime.datetime.fromisoformat(issued.expires_at) + datetime.timedelta(seconds=1)
    store.create_role("test", _role())       # any commit: a revision at the new time
    assert build_snapshot(store.state())["clusters"][0]["agent_identities"] == []
    with pytest.raises(Unauthenticated, match=f"certificate {issued.serial} expired"):
        store.renew_agent(issued.serial, issued.spki_sha256, _sign(authority, ""))
    with pytest.raises(PermissionDenied, match="is not one of cluster 'beta'"):
        store.enroll_agent(token.sha256, "beta", _sign(authority, "beta"))


def _role() -> Role:
    return Role(name="viewer", rules=(Rule(verbs=("get",), api_groups=("",), resources=("pods",)),))


def test_migration_5_keeps_existing_tunnel_clusters(store_url):
    old = Store(backend_for(store_url))
    with old._transaction(old._backend.begin_write) as tx:   # a database of the previous release
        tx.run("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
               "applied_at TEXT NOT NULL)")
        for version, name, statements in MIGRATIONS[:4]:
            for statement in statements:
                tx.run(statement)
            tx.run("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                   (version, name, "2026-01-01T00:00:00Z"))
        tx.run("INSERT INTO clusters (name, endpoint, credential, ca_bundle, labels, tunnel, identity_mode, "
               "kubectl_enabled, revision) VALUES ('t', 'https://10.0.0.1:6443', "
               "'{\"kind\":\"token\",\"ref\":\"file:t\"}', '', '{}', 1, 'impersonate', 1, 1)")
    assert old.migrate() == [5]
    snapshot = build_snapshot(old.state())
    validate(snapshot)
    assert snapshot["clusters"][0]["agent_identities"] == []
    assert snapshot["clusters"][0]["endpoint"] == "https://10.0.0.1:6443"   # given ones are kept
    old.close()


# -- apctl and the agent's renewal loop, against a running control plane ---------------------------------

@pytest.fixture
def apctl(plane, tmp_path, capsys):
    from controlplane.apctl import main

    settings = tmp_path / "apctl.yaml"
    settings.write_text(f"address: 127.0.0.1:{plane.port}\ntoken_file: admin.token\n")

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--config", str(settings), *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_apctl_registers_bootstraps_and_shows_agents(apctl, channel, tmp_path):
    code, out, err = apctl("cluster", "register", "edge-1", "--tunnel", "--label", "env=edge",
                           "--bootstrap-ttl", "30m")
    assert code == 0 and "cluster/edge-1 registered (tunnel)" in err and "shown once" in err
    secret = out.strip()
    assert secret.startswith("apb_") and "\n" not in secret     # stdout holds the token alone
    code, out, _ = apctl("cluster", "bootstrap", "edge-1")
    spare = out.strip()
    assert code == 0 and spare.startswith("apb_") and spare != secret

    code, out, _ = apctl("get", "clusters")
    # AGENTS connected/enrolled, TUNNELS, LAST SEEN: no gateway has seen an agent of it
    assert out.splitlines()[1].split() == ["edge-1", "<none>", "env=edge", "yes", "0/0", "0", "<none>", "1"]
    enrolled = enrollment.enroll(_agents(channel), "edge-1", secret, tmp_path / "agent")
    code, out, _ = apctl("get", "clusters")
    assert out.splitlines()[1].split()[3:5] == ["yes", "0/1"]
    code, out, _ = apctl("get", "agents", "edge-1")
    assert code == 0 and out.splitlines()[1].split()[:2] == [enrolled.serial, "edge-1"]
    assert out.splitlines()[1].split()[4] == "live"

    code, _, err = apctl("revoke", "cert", enrolled.serial)
    assert code == 0
    code, out, _ = apctl("get", "clusters")
    assert out.splitlines()[1].split()[3:5] == ["yes", "0/0"]
    _refusal(lambda: enrollment.renew(_agents(channel), tmp_path / "agent"))
    code, out, _ = apctl("get", "refusals", "-o", "json")
    [refusal] = json.loads(out)["items"]
    assert (refusal["kind"], refusal["action"], refusal["subject"]) == (
        "Refusal", "agents.renew", f"certificate/{enrolled.serial}")

    code, _, err = apctl("cluster", "register", "edge-2")
    assert code == 2 and "takes --tunnel" in err
    code, _, err = apctl("cluster", "bootstrap", "nope")
    assert code == 1 and "FAILED_PRECONDITION: cluster 'nope' is not registered" in err


def test_the_agent_renews_before_expiry(channel, plane, tmp_path):
    token = _register_tunnel(channel).bootstrap
    state = tmp_path / "agent"
    first = enrollment.enroll(_agents(channel), "alpha", token.secret, state)
    renewed: list[enrollment.Credentials] = []

    async def run() -> None:
        stop = asyncio.Event()

        def on_renewed(credentials: enrollment.Credentials) -> None:
            renewed.append(credentials)
            stop.set()

        # the loop's clock at 2/3 of the lifetime: renewal is due at once (the proof it signs
        # carries the real time, which the control plane checks)
        lifetime = first.cert.not_valid_after_utc - first.cert.not_valid_before_utc
        ahead = first.cert.not_valid_before_utc + lifetime * enrollment.RENEW_AT - \
            datetime.datetime.now(datetime.timezone.utc)

        def now() -> datetime.datetime:
            return datetime.datetime.now(datetime.timezone.utc) + ahead

        await asyncio.wait_for(enrollment.keep_renewed(_agents(channel), state, stop, on_renewed, now=now), 60)

    asyncio.run(run())
    assert [c.serial for c in renewed] == [enrollment.load_credentials(state).serial]
    assert renewed[0].serial != first.serial


def test_the_agent_process_enrolls_into_its_state_dir(channel, plane, tmp_path, signing_key):
    from dataplane.agent import AgentConfig, _enroll_if_needed
    from dataplane.signing import write_public_key

    (tmp_path / "bootstrap").write_text(_register_tunnel(channel).bootstrap.secret + "\n")
    write_public_key(signing_key.public_key(), tmp_path / "assertion.pub")
    (tmp_path / "api-ca.pem").write_bytes(CertificateAuthority.create("api").cert_pem)
    (tmp_path / "sa.token").write_text("service-account-token")
    config = AgentConfig(gateway="127.0.0.1:9443", cluster="alpha", assertion_key=str(tmp_path / "assertion.pub"),
                         api_server="https://127.0.0.1:6443", api_ca=str(tmp_path / "api-ca.pem"),
                         token_file=str(tmp_path / "sa.token"), controlplane=f"127.0.0.1:{plane.port}",
                         bootstrap_token_file=str(tmp_path / "bootstrap"), state_dir=str(tmp_path / "state"))
    config.validate()
    assert config.cert == config.key == str(tmp_path / "state" / enrollment.CREDENTIALS_FILE)
    _enroll_if_needed(config)
    config.tunnel_ssl_context()          # loads the enrolled certificate, key and the gateways' CA
    serial = enrollment.load_credentials(tmp_path / "state").serial
    _enroll_if_needed(config)            # enrolled: the spent token is not presented again
    assert enrollment.load_credentials(tmp_path / "state").serial == serial
    assert _refusals(channel) == []
