"""The gRPC API end to end over a real local port, with a SQLite store and a private Redis:
mutations publish verifiable snapshots, bad input changes nothing, roles are enforced."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from controlplane.api.v1 import (bindings_pb2, bindings_pb2_grpc, clusters_pb2, clusters_pb2_grpc, revocations_pb2,
                                 revocations_pb2_grpc, roles_pb2, roles_pb2_grpc, tokens_pb2, tokens_pb2_grpc)
from controlplane.api.v1 import kubeconfigs_pb2, kubeconfigs_pb2_grpc
from controlplane.snapshots import REVOCATION_CHANNEL, SNAPSHOT_KEY, verify_revocation_delta
from dataplane.identity import Identity
from dataplane.signing import write_private_key
from dataplane.snapshot import verify_snapshot

from native.requestinfo import parse_request_info

from .planes import ADMIN, ADMIN_TOKEN, READER, READER_TOKEN, next_message, subscribe


def a_cluster(name: str = "sandbox", **overrides) -> clusters_pb2.Cluster:
    fields = dict(name=name, endpoint="https://127.0.0.1:6443", ca_bundle="",
                  credential=clusters_pb2.Credential(kind="token", ref=f"file:{name}.token"),
                  labels={"env": "dev", "region": "eu"})
    return clusters_pb2.Cluster(**{**fields, **overrides})


def a_binding(**overrides) -> bindings_pb2.Binding:
    fields = dict(name="devs-view", role="viewer", subjects=[bindings_pb2.Subject(kind="group", name="devs")],
                  clusters=bindings_pb2.ClusterSelector(selector={"env": "dev"}))
    return bindings_pb2.Binding(**{**fields, **overrides})


VIEWER = roles_pb2.Role(name="viewer", rules=[roles_pb2.Rule(verbs=["get", "list"], api_groups=["*"], resources=["*"])])


def published(redis_client, signing_key):
    return verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key())


def test_register_bind_and_the_published_snapshot_verifies(channel, plane, redis_client, signing_key):
    clusters = clusters_pb2_grpc.ClusterServiceStub(channel)
    registered = clusters.RegisterCluster(clusters_pb2.RegisterClusterRequest(cluster=a_cluster()), metadata=ADMIN)
    assert registered.revision == 1 and registered.kubectl_enabled
    roles_pb2_grpc.RoleServiceStub(channel).CreateRole(roles_pb2.CreateRoleRequest(role=VIEWER), metadata=ADMIN)
    bound = bindings_pb2_grpc.BindingServiceStub(channel).CreateBinding(
        bindings_pb2.CreateBindingRequest(binding=a_binding()), metadata=ADMIN)
    assert bound.revision == 3

    snapshot = published(redis_client, signing_key)
    assert snapshot.revision == 3
    assert snapshot.clusters["sandbox"].labels == {"env": "dev", "region": "eu"}
    assert [b["name"] for b in snapshot.data["bindings"]] == ["devs-view"]
    # the published policy really grants what was bound
    decision = snapshot.policy.decide(Identity(user="ann", groups=("devs",)), snapshot.clusters["sandbox"],
                                      parse_request_info("GET", "/api/v1/namespaces/default/pods", ""))
    assert decision.allowed and decision.binding == "devs-view"

    listed = clusters.ListClusters(clusters_pb2.ListClustersRequest(), metadata=READER)
    assert [c.name for c in listed.clusters] == ["sandbox"]
    assert [(a.revision, a.actor, a.action) for a in plane.store.audit()] == [
        (1, "token:admin", "clusters.create"), (2, "token:admin", "roles.create"),
        (3, "token:admin", "bindings.create")]


BAD_CLUSTERS = [
    (a_cluster(name="Bad_Name!"), "cluster.name"),
    (a_cluster(endpoint="http://example.com"), "cluster.endpoint"),
    (a_cluster(endpoint="https://user:pw@example.com"), "cluster.endpoint"),
    (a_cluster(credential=clusters_pb2.Credential(kind="password", ref="file:x")), "cluster.credential.kind"),
    (a_cluster(credential=clusters_pb2.Credential(kind="token", ref="/etc/shadow")), "cluster.credential.ref"),
    (a_cluster(labels={"bad key!": "x"}), "cluster.labels"),
    (a_cluster(identity_mode="root"), "cluster.identity_mode"),
]


@pytest.mark.parametrize(("cluster", "field"), BAD_CLUSTERS, ids=[field for _, field in BAD_CLUSTERS])
def test_bad_cluster_is_invalid_argument_naming_the_field(channel, plane, cluster, field):
    with pytest.raises(grpc.RpcError) as caught:
        clusters_pb2_grpc.ClusterServiceStub(channel).RegisterCluster(
            clusters_pb2.RegisterClusterRequest(cluster=cluster), metadata=ADMIN)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field), caught.value.details()
    assert plane.store.revision() == 0


BAD_BINDINGS = [
    (a_binding(clusters=bindings_pb2.ClusterSelector()), "binding.clusters", grpc.StatusCode.INVALID_ARGUMENT),
    (a_binding(clusters=bindings_pb2.ClusterSelector(selector={"env": "not valid!"})),
     "binding.clusters.selector.env", grpc.StatusCode.INVALID_ARGUMENT),
    (a_binding(clusters=bindings_pb2.ClusterSelector(names=["UPPER"])), "binding.clusters.names[0]",
     grpc.StatusCode.INVALID_ARGUMENT),
    (a_binding(subjects=[bindings_pb2.Subject(kind="robot", name="r2")]), "binding.subjects[0].kind",
     grpc.StatusCode.INVALID_ARGUMENT),
    (a_binding(role="missing"), "binding.role", grpc.StatusCode.FAILED_PRECONDITION),
]


@pytest.mark.parametrize(("binding", "field", "code"), BAD_BINDINGS, ids=[field for _, field, _ in BAD_BINDINGS])
def test_bad_binding_is_refused_and_changes_nothing(channel, plane, binding, field, code):
    roles_pb2_grpc.RoleServiceStub(channel).CreateRole(roles_pb2.CreateRoleRequest(role=VIEWER), metadata=ADMIN)
    with pytest.raises(grpc.RpcError) as caught:
        bindings_pb2_grpc.BindingServiceStub(channel).CreateBinding(
            bindings_pb2.CreateBindingRequest(binding=binding), metadata=ADMIN)
    assert caught.value.code() == code
    assert caught.value.details().startswith(field), caught.value.details()
    assert plane.store.revision() == 1


def test_not_found_already_exists_stale_revision_and_unknown_fields(channel, plane):
    clusters = clusters_pb2_grpc.ClusterServiceStub(channel)

    def status(call, request, metadata=ADMIN):
        with pytest.raises(grpc.RpcError) as caught:
            call(request, metadata=metadata)
        return caught.value.code(), caught.value.details()

    assert status(clusters.GetCluster, clusters_pb2.GetClusterRequest(name="nope")) == (
        grpc.StatusCode.NOT_FOUND, "cluster 'nope' does not exist")
    first = clusters.RegisterCluster(clusters_pb2.RegisterClusterRequest(cluster=a_cluster()), metadata=ADMIN)
    code, _ = status(clusters.RegisterCluster, clusters_pb2.RegisterClusterRequest(cluster=a_cluster()))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    clusters.UpdateCluster(clusters_pb2.UpdateClusterRequest(cluster=a_cluster(labels={"env": "test"}),
                                                             expected_revision=first.revision), metadata=ADMIN)
    code, details = status(clusters.UpdateCluster, clusters_pb2.UpdateClusterRequest(
        cluster=a_cluster(labels={"env": "prod"}), expected_revision=first.revision))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "changed at revision 2" in details

    # a field this server does not know (number 99 inside the cluster) is refused, not dropped
    cluster_bytes = a_cluster(name="other").SerializeToString() + b"\x98\x06\x01"   # field 99, varint 1
    with_unknown = b"\x0a" + bytes([len(cluster_bytes)]) + cluster_bytes       # field 1 (cluster)
    call = channel.unary_unary("/accesspoint.controlplane.v1.ClusterService/RegisterCluster",
                               request_serializer=None, response_deserializer=clusters_pb2.Cluster.FromString)
    with pytest.raises(grpc.RpcError) as caught:
        call(with_unknown, metadata=ADMIN)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "request.cluster: unknown field(s)"
    assert plane.store.revision() == 2


def test_read_only_and_anonymous_callers(channel, plane):
    clusters = clusters_pb2_grpc.ClusterServiceStub(channel)
    request = clusters_pb2.RegisterClusterRequest(cluster=a_cluster())
    for metadata, code in [(READER, grpc.StatusCode.PERMISSION_DENIED), ([], grpc.StatusCode.UNAUTHENTICATED),
                           ([("authorization", "Bearer wrong-token")], grpc.StatusCode.UNAUTHENTICATED)]:
        with pytest.raises(grpc.RpcError) as caught:
            clusters.RegisterCluster(request, metadata=metadata)
        assert caught.value.code() == code
        assert ADMIN_TOKEN not in caught.value.details() and READER_TOKEN not in caught.value.details()
    assert plane.store.revision() == 0
    assert clusters.ListClusters(clusters_pb2.ListClustersRequest(), metadata=READER).clusters == []


def test_tokens_are_returned_once_and_revocation_is_announced(channel, plane, redis_client, signing_key):
    tokens = tokens_pb2_grpc.TokenServiceStub(channel)
    issued = tokens.IssueToken(tokens_pb2.IssueTokenRequest(user="bob", groups=["devs"]), metadata=ADMIN)
    assert issued.secret.startswith("apt_") and issued.token.user == "bob"
    listed = tokens.ListTokens(tokens_pb2.ListTokensRequest(), metadata=READER)
    assert issued.secret.encode() not in listed.SerializeToString()
    assert issued.secret.encode() not in redis_client.get(SNAPSHOT_KEY)
    snapshot = published(redis_client, signing_key)
    assert snapshot.authenticator.authenticate(None, f"Bearer {issued.secret}".encode()).user == "bob"

    deltas = subscribe(redis_client, REVOCATION_CHANNEL)
    revoked = tokens.RevokeToken(tokens_pb2.RevokeTokenRequest(id=issued.token.id), metadata=ADMIN)
    delta = verify_revocation_delta(next_message(deltas), signing_key.public_key())
    assert delta["revision"] == revoked.revision and delta["revocations"] == {"token_ids": [issued.token.id]}
    assert published(redis_client, signing_key).data["revocations"]["token_ids"] == [issued.token.id]

    revocations = revocations_pb2_grpc.RevocationServiceStub(channel)
    serial = revocations.Revoke(revocations_pb2.RevokeRequest(kind="cert_serial", value="00AB"), metadata=ADMIN)
    assert serial.value == "ab"
    assert verify_revocation_delta(next_message(deltas), signing_key.public_key())["revocations"] == {
        "cert_serials": ["ab"]}
    with pytest.raises(grpc.RpcError) as caught:
        revocations.Revoke(revocations_pb2.RevokeRequest(kind="badge", value="x"), metadata=ADMIN)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and caught.value.details().startswith("kind")
    deltas.close()


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          metadata=READER)
    names = {service.name for response in responses for service in response.list_services_response.service}
    assert "accesspoint.controlplane.v1.ClusterService" in names and "grpc.health.v1.Health" in names


def test_cli_process_serves_and_stops_gracefully_on_sigterm(tmp_path, redis_url, signing_key):
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    write_private_key(signing_key, tmp_path / "signing.pem")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["--listen", f"127.0.0.1:{port}", "--store", f"sqlite:///{tmp_path / 'cp.db'}", "--redis-url", redis_url,
            "--signing-key", str(tmp_path / "signing.pem"), "--admin-token-file", str(tmp_path / "admin.token"),
            "--state-dir", str(tmp_path / "state"), "--grace", "2"]
    script = ("import argparse, sys; from controlplane import cli; p = argparse.ArgumentParser(); "
              "cli.add_arguments(p); sys.exit(cli.command(p.parse_args(sys.argv[1:])))")
    process = subprocess.Popen([sys.executable, "-c", script, *argv], stderr=subprocess.PIPE)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as opened:
            grpc.channel_ready_future(opened).result(timeout=20)
            health = health_pb2_grpc.HealthStub(opened).Check(health_pb2.HealthCheckRequest(), wait_for_ready=True)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr = process.stderr.read().decode()
        process.stderr.close()
    assert ADMIN_TOKEN not in stderr


class Api:
    """Every stub, and a call as the admin."""

    def __init__(self, channel):
        self.clusters = clusters_pb2_grpc.ClusterServiceStub(channel)
        self.roles = roles_pb2_grpc.RoleServiceStub(channel)
        self.bindings = bindings_pb2_grpc.BindingServiceStub(channel)
        self.tokens = tokens_pb2_grpc.TokenServiceStub(channel)
        self.services = tokens_pb2_grpc.ServiceIdentityServiceStub(channel)
        self.revocations = revocations_pb2_grpc.RevocationServiceStub(channel)
        self.kubeconfigs = kubeconfigs_pb2_grpc.KubeconfigServiceStub(channel)


ARGOCD = tokens_pb2.ServiceIdentity(name="argocd", groups=["deployers"])


def test_every_mutation_is_audited_with_who_what_and_the_revision_it_made(channel, plane):
    api = Api(channel)
    made: list[tuple[int, str, str]] = []    # (revision, action, target), as the API answered each call

    def did(revision: int, action: str, target: str) -> None:
        made.append((revision, action, target))

    did(api.clusters.RegisterCluster(clusters_pb2.RegisterClusterRequest(cluster=a_cluster()), metadata=ADMIN).revision,
        "clusters.create", "cluster/sandbox")
    did(api.clusters.UpdateCluster(clusters_pb2.UpdateClusterRequest(cluster=a_cluster(labels={"env": "test"})),
                                   metadata=ADMIN).revision, "clusters.update", "cluster/sandbox")
    did(api.roles.CreateRole(roles_pb2.CreateRoleRequest(role=VIEWER), metadata=ADMIN).revision,
        "roles.create", "role/viewer")
    did(api.roles.UpdateRole(roles_pb2.UpdateRoleRequest(role=VIEWER), metadata=ADMIN).revision,
        "roles.update", "role/viewer")
    did(api.bindings.CreateBinding(bindings_pb2.CreateBindingRequest(binding=a_binding()), metadata=ADMIN).revision,
        "bindings.create", "binding/devs-view")
    did(api.bindings.UpdateBinding(bindings_pb2.UpdateBindingRequest(binding=a_binding(role="viewer")),
                                   metadata=ADMIN).revision, "bindings.update", "binding/devs-view")
    did(api.services.CreateServiceIdentity(tokens_pb2.CreateServiceIdentityRequest(service_identity=ARGOCD),
                                           metadata=ADMIN).revision, "service_identities.create",
        "service identity/argocd")
    person = api.tokens.IssueToken(tokens_pb2.IssueTokenRequest(user="bob"), metadata=ADMIN).token
    did(person.revision, "tokens.issue", f"token/{person.id}")
    service = api.tokens.IssueToken(tokens_pb2.IssueTokenRequest(service="argocd"), metadata=ADMIN).token
    did(service.revision, "tokens.issue", f"token/{service.id}")
    for token in (person, service):
        did(api.tokens.RevokeToken(tokens_pb2.RevokeTokenRequest(id=token.id), metadata=ADMIN).revision,
            "revocations.revoke", f"token/{token.id}")
    did(api.revocations.Revoke(revocations_pb2.RevokeRequest(kind="user", value="mallory"), metadata=ADMIN).revision,
        "revocations.revoke", "user/mallory")
    certificate = api.kubeconfigs.IssueKubeconfig(kubeconfigs_pb2.IssueKubeconfigRequest(
        user="ann", groups=["devs"], cluster="sandbox"), metadata=ADMIN).certificate
    did(certificate.revision, "certificates.issue", f"certificate/{certificate.serial}")
    did(api.bindings.DeleteBinding(bindings_pb2.DeleteBindingRequest(name="devs-view"), metadata=ADMIN).revision,
        "bindings.delete", "binding/devs-view")
    did(api.roles.DeleteRole(roles_pb2.DeleteRoleRequest(name="viewer"), metadata=ADMIN).revision,
        "roles.delete", "role/viewer")
    did(api.services.DeleteServiceIdentity(tokens_pb2.DeleteServiceIdentityRequest(name="argocd"),
                                           metadata=ADMIN).revision, "service_identities.delete",
        "service identity/argocd")
    did(api.clusters.DeregisterCluster(clusters_pb2.DeregisterClusterRequest(name="sandbox"), metadata=ADMIN).revision,
        "clusters.delete", "cluster/sandbox")

    audit = plane.store.audit()
    assert [(entry.revision, entry.action, entry.target) for entry in audit] == made
    assert {entry.actor for entry in audit} == {"token:admin"}
    # One counter without gaps: the revision before each change is the one just below it.
    assert [entry.revision for entry in audit] == list(range(1, len(made) + 1))
    assert plane.store.revision() == len(made)


def with_unknown_subject_field(binding: bindings_pb2.Binding) -> bytes:
    """A CreateBindingRequest whose first subject carries field 99, unknown to this server."""
    subject = bindings_pb2.Subject(kind="group", name="devs").SerializeToString() + b"\x98\x06\x01"
    rest = bindings_pb2.Binding(name=binding.name, role=binding.role, clusters=binding.clusters).SerializeToString()
    inner = rest + b"\x1a" + bytes([len(subject)]) + subject                   # field 3 (subjects)
    return b"\x0a" + bytes([len(inner)]) + inner                               # field 1 (binding)


def refusals(api: Api, channel):
    """(what, call, expected code, text the message must hold): duplicates, missing references,
    invalid selectors, unknown fields; each after `baseline` has run."""
    raw_create_binding = channel.unary_unary("/accesspoint.controlplane.v1.BindingService/CreateBinding",
                                             request_serializer=None,
                                             response_deserializer=bindings_pb2.Binding.FromString)
    code = grpc.StatusCode
    return [
        ("duplicate cluster", lambda: api.clusters.RegisterCluster(
            clusters_pb2.RegisterClusterRequest(cluster=a_cluster()), metadata=ADMIN), code.ALREADY_EXISTS, "sandbox"),
        ("duplicate role", lambda: api.roles.CreateRole(roles_pb2.CreateRoleRequest(role=VIEWER), metadata=ADMIN),
         code.ALREADY_EXISTS, "viewer"),
        ("duplicate binding", lambda: api.bindings.CreateBinding(
            bindings_pb2.CreateBindingRequest(binding=a_binding()), metadata=ADMIN), code.ALREADY_EXISTS, "devs-view"),
        ("duplicate service identity", lambda: api.services.CreateServiceIdentity(
            tokens_pb2.CreateServiceIdentityRequest(service_identity=ARGOCD), metadata=ADMIN),
         code.ALREADY_EXISTS, "argocd"),
        ("duplicate revocation", lambda: api.revocations.Revoke(
            revocations_pb2.RevokeRequest(kind="user", value="mallory"), metadata=ADMIN),
         code.ALREADY_EXISTS, "mallory"),
        ("binding to a missing role", lambda: api.bindings.UpdateBinding(
            bindings_pb2.UpdateBindingRequest(binding=a_binding(role="ghost")), metadata=ADMIN),
         code.FAILED_PRECONDITION, "binding.role"),
        ("deleting a bound role", lambda: api.roles.DeleteRole(
            roles_pb2.DeleteRoleRequest(name="viewer"), metadata=ADMIN), code.FAILED_PRECONDITION, "viewer"),
        ("updating a missing cluster", lambda: api.clusters.UpdateCluster(
            clusters_pb2.UpdateClusterRequest(cluster=a_cluster(name="ghost")), metadata=ADMIN),
         code.NOT_FOUND, "ghost"),
        ("deregistering a missing cluster", lambda: api.clusters.DeregisterCluster(
            clusters_pb2.DeregisterClusterRequest(name="ghost"), metadata=ADMIN), code.NOT_FOUND, "ghost"),
        ("deleting a missing binding", lambda: api.bindings.DeleteBinding(
            bindings_pb2.DeleteBindingRequest(name="ghost"), metadata=ADMIN), code.NOT_FOUND, "ghost"),
        ("revoking a missing token", lambda: api.tokens.RevokeToken(
            tokens_pb2.RevokeTokenRequest(id="t-ghost"), metadata=ADMIN), code.NOT_FOUND, "t-ghost"),
        ("a token of a missing service identity", lambda: api.tokens.IssueToken(
            tokens_pb2.IssueTokenRequest(service="ghost"), metadata=ADMIN), code.FAILED_PRECONDITION, "ghost"),
        ("a kubeconfig for a missing cluster", lambda: api.kubeconfigs.IssueKubeconfig(
            kubeconfigs_pb2.IssueKubeconfigRequest(user="ann", cluster="ghost"), metadata=ADMIN),
         code.NOT_FOUND, "ghost"),
        ("an invalid selector key", lambda: api.bindings.CreateBinding(bindings_pb2.CreateBindingRequest(
            binding=a_binding(name="other", clusters=bindings_pb2.ClusterSelector(selector={"bad key!": "x"}))),
            metadata=ADMIN), code.INVALID_ARGUMENT, "binding.clusters.selector"),
        ("an unknown field in a subject", lambda: raw_create_binding(
            with_unknown_subject_field(a_binding(name="other")), metadata=ADMIN),
         code.INVALID_ARGUMENT, "request.binding.subjects[0]: unknown field(s)"),
    ]


def test_refused_input_names_the_problem_and_changes_nothing(channel, plane, redis_client):
    api = Api(channel)
    api.clusters.RegisterCluster(clusters_pb2.RegisterClusterRequest(cluster=a_cluster()), metadata=ADMIN)
    api.roles.CreateRole(roles_pb2.CreateRoleRequest(role=VIEWER), metadata=ADMIN)
    api.bindings.CreateBinding(bindings_pb2.CreateBindingRequest(binding=a_binding()), metadata=ADMIN)
    api.services.CreateServiceIdentity(tokens_pb2.CreateServiceIdentityRequest(service_identity=ARGOCD), metadata=ADMIN)
    api.revocations.Revoke(revocations_pb2.RevokeRequest(kind="user", value="mallory"), metadata=ADMIN)
    revision, audit, published_bytes = plane.store.revision(), plane.store.audit(), redis_client.get(SNAPSHOT_KEY)
    state = plane.store.state()

    problems = []
    for what, call, code, text in refusals(api, channel):
        try:
            call()
        except grpc.RpcError as exc:
            if exc.code() != code or text not in exc.details():
                problems.append(f"{what}: {exc.code().name} {exc.details()!r}, expected {code.name} naming {text!r}")
        else:
            problems.append(f"{what}: accepted")
    assert problems == []
    assert (plane.store.revision(), plane.store.audit(), plane.store.state()) == (revision, audit, state)
    assert redis_client.get(SNAPSHOT_KEY) == published_bytes
