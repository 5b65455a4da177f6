"""Access requests, break-glass and console sessions through the API, with people calling as
themselves (their own gateway token) or through the portal (on_behalf_of metadata): approval
writes the time-bound grant into the signed snapshot, break-glass is capped, alerted and can be
switched off, and logout revokes a session fleet-wide at once."""
from __future__ import annotations

import base64
import datetime
import logging
import secrets

import grpc
import pytest
import yaml
from cryptography import x509
from google.protobuf.duration_pb2 import Duration

from controlplane.api.v1 import (access_pb2, access_pb2_grpc, bindings_pb2, bindings_pb2_grpc, clusters_pb2,
                                 clusters_pb2_grpc, kubeconfigs_pb2, kubeconfigs_pb2_grpc, revocations_pb2,
                                 revocations_pb2_grpc, roles_pb2, roles_pb2_grpc, sessions_pb2, sessions_pb2_grpc,
                                 settings_pb2, settings_pb2_grpc, tokens_pb2, tokens_pb2_grpc)
from controlplane.server import serve
from controlplane.snapshots import REVOCATION_CHANNEL, SNAPSHOT_KEY, verify_revocation_delta
from dataplane.identity import AuthenticationError, Identity
from dataplane.snapshot import verify_snapshot
from native.requestinfo import parse_request_info

from .planes import ADMIN, READER, next_message, plane_config, subscribe
from .test_api import VIEWER, a_cluster
from .test_policy_api import published, refused

PORTAL_TOKEN = "portal-" + secrets.token_hex(16)
PORTAL = [("authorization", f"Bearer {PORTAL_TOKEN}")]
HOUR = Duration(seconds=3600)


def on_behalf_of(user: str, *groups: str) -> list[tuple[str, str]]:
    return PORTAL + [("x-accesspoint-on-behalf-of", user)] + \
        [("x-accesspoint-on-behalf-of-group", group) for group in groups]


@pytest.fixture
def plane(tmp_path, redis_url, redis_client, signing_key):
    """The test plane, with a portal token."""
    config = plane_config(tmp_path, redis_url, signing_key)
    (tmp_path / "portal.token").write_text(PORTAL_TOKEN)
    config.portal_token_file = str(tmp_path / "portal.token")
    running = serve(config)
    yield running
    running.stop(1)


class Api:
    def __init__(self, channel):
        self.access = access_pb2_grpc.AccessServiceStub(channel)
        self.sessions = sessions_pb2_grpc.SessionServiceStub(channel)
        self.settings = settings_pb2_grpc.SettingsServiceStub(channel)
        self.tokens = tokens_pb2_grpc.TokenServiceStub(channel)
        self.kubeconfigs = kubeconfigs_pb2_grpc.KubeconfigServiceStub(channel)
        self.clusters = clusters_pb2_grpc.ClusterServiceStub(channel)
        self.bindings = bindings_pb2_grpc.BindingServiceStub(channel)
        self.services = tokens_pb2_grpc.ServiceIdentityServiceStub(channel)
        self.revocations = revocations_pb2_grpc.RevocationServiceStub(channel)

    def person(self, user: str, *groups: str) -> list[tuple[str, str]]:
        """Call metadata with a fresh gateway token of `user` (what the person holds)."""
        issued = self.tokens.IssueToken(tokens_pb2.IssueTokenRequest(user=user, groups=groups), metadata=ADMIN)
        return [("authorization", f"Bearer {issued.secret}")]

    def settle(self, **fields) -> None:
        self.settings.UpdateSettings(settings_pb2.UpdateSettingsRequest(settings=settings_pb2.Settings(**fields)),
                                     metadata=ADMIN)


@pytest.fixture
def api(channel):
    api = Api(channel)
    api.clusters.RegisterCluster(clusters_pb2.RegisterClusterRequest(cluster=a_cluster("prod-eu", labels={
        "env": "prod"})), metadata=ADMIN)
    api.clusters.RegisterCluster(clusters_pb2.RegisterClusterRequest(cluster=a_cluster("dev-eu", labels={
        "env": "dev"})), metadata=ADMIN)
    roles_pb2_grpc.RoleServiceStub(channel).CreateRole(roles_pb2.CreateRoleRequest(role=VIEWER), metadata=ADMIN)
    return api


def _ask(api: Api, metadata, **fields) -> access_pb2.AccessRequest:
    request = access_pb2.CreateAccessRequestRequest(**{"role": "viewer", "cluster": "prod-eu", "duration": HOUR,
                                                       "reason": "INC-42 debugging", **fields})
    return api.access.CreateAccessRequest(request, metadata=metadata)


def _seconds_between(start, end) -> float:
    return (end.ToDatetime() - start.ToDatetime()).total_seconds()


def test_an_approved_request_is_a_time_bound_grant_in_the_snapshot(api, plane, redis_client, signing_key):
    api.settle(approver_group="approvers")
    ann, bob = api.person("ann", "devs", "approvers"), api.person("bob", "approvers")
    asked = _ask(api, ann)
    assert (asked.user, asked.state, asked.duration.seconds) == ("ann", "pending", 3600)
    assert [b["name"] for b in published(redis_client, signing_key)["bindings"]] == []

    # the requester cannot approve their own request, even as an approver
    code, message = refused(api.access.ApproveAccessRequest, access_pb2.DecideAccessRequestRequest(id=asked.id),
                            metadata=ann)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "own" in message
    carl = api.person("carl", "devs")
    code, message = refused(api.access.ApproveAccessRequest, access_pb2.DecideAccessRequestRequest(id=asked.id),
                            metadata=carl)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "approvers" in message

    approved = api.access.ApproveAccessRequest(access_pb2.DecideAccessRequestRequest(id=asked.id, reason="ok"),
                                               metadata=bob)
    assert (approved.state, approved.decided_by, approved.binding) == ("approved", "bob", asked.id)
    assert _seconds_between(approved.decided_at, approved.expires_at) == 3600
    (grant,) = published(redis_client, signing_key)["bindings"]
    assert grant == {"name": asked.id, "role": "viewer", "subjects": [{"kind": "user", "name": "ann"}],
                     "clusters": {"names": ["prod-eu"], "selector": {}},
                     "valid_from": approved.decided_at.ToJsonString(),
                     "valid_until": approved.expires_at.ToJsonString(),
                     "grant": {"kind": "access_request", "id": asked.id, "reason": "INC-42 debugging"}}
    # the gateways' own policy, from the signed snapshot: allowed until expiry, then not, with no call
    snapshot = verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key())
    pods = parse_request_info("GET", "/api/v1/namespaces/default/pods", "")
    expiry = approved.expires_at.ToDatetime(tzinfo=datetime.timezone.utc).timestamp()
    allowed = snapshot.policy.decide(Identity(user="ann", groups=("devs",)), snapshot.clusters["prod-eu"], pods,
                                     now=expiry - 1)
    assert (allowed.allowed, allowed.grant_kind, allowed.grant_id) == (True, "access_request", asked.id)
    assert not snapshot.policy.decide(Identity(user="ann", groups=("devs",)), snapshot.clusters["prod-eu"], pods,
                                      now=expiry).allowed
    code, _ = refused(api.access.DenyAccessRequest, access_pb2.DecideAccessRequestRequest(id=asked.id), metadata=bob)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    # a grant is the approver's decision: it can be withdrawn (deleted) but not edited
    edited = bindings_pb2.Binding(name=asked.id, role="viewer", subjects=[bindings_pb2.Subject(kind="user", name="ann")],
                                  clusters=bindings_pb2.ClusterSelector(names=["*"]))
    code, message = refused(api.bindings.UpdateBinding, bindings_pb2.UpdateBindingRequest(binding=edited),
                            metadata=ADMIN)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "access_request" in message

    denied_one = _ask(api, ann, cluster="dev-eu")
    denied = api.access.DenyAccessRequest(access_pb2.DecideAccessRequestRequest(id=denied_one.id, reason="no"),
                                          metadata=bob)
    assert (denied.state, denied.binding, denied.decision_reason) == ("denied", "", "no")
    assert len(published(redis_client, signing_key)["bindings"]) == 1
    listed = api.access.ListAccessRequests(access_pb2.ListAccessRequestsRequest(state="pending"), metadata=READER)
    assert list(listed.access_requests) == []
    listed = api.access.ListAccessRequests(access_pb2.ListAccessRequestsRequest(user="ann"), metadata=carl)
    assert [(r.id, r.state) for r in listed.access_requests] == [(asked.id, "approved"), (denied_one.id, "denied")]
    assert [(a.actor, a.action) for a in plane.store.audit() if a.action.startswith("access")] == [
        ("user:ann", "access_requests.create"), ("user:bob", "access_requests.approve"),
        ("user:ann", "access_requests.create"), ("user:bob", "access_requests.deny")]


BAD_REQUESTS = [
    (dict(reason="  "), grpc.StatusCode.INVALID_ARGUMENT, "reason"),
    (dict(duration=Duration(seconds=0)), grpc.StatusCode.INVALID_ARGUMENT, "duration"),
    (dict(duration=Duration(seconds=9 * 3600)), grpc.StatusCode.INVALID_ARGUMENT, "duration"),
    (dict(cluster="Prod EU"), grpc.StatusCode.INVALID_ARGUMENT, "cluster"),
    (dict(cluster="ghost"), grpc.StatusCode.NOT_FOUND, "ghost"),
    (dict(role="ghost"), grpc.StatusCode.NOT_FOUND, "ghost"),
]


@pytest.mark.parametrize("fields, code, text", BAD_REQUESTS, ids=[t for _, _, t in BAD_REQUESTS])
def test_bad_access_requests_are_refused(api, plane, fields, code, text):
    ann = api.person("ann")
    revision = plane.store.revision()
    got, message = refused(_ask, api, ann, **fields)
    assert got == code and text in message
    assert plane.store.revision() == revision


def test_who_may_call_what(api, plane):
    ann = api.person("ann", "devs")
    # operators act for no person; people may call only their own methods
    code, message = refused(_ask, api, ADMIN)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "acts for no person" in message
    code, _ = refused(api.clusters.ListClusters, clusters_pb2.ListClustersRequest(), metadata=ann)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = refused(api.sessions.CreateSession, sessions_pb2.CreateSessionRequest(user="ann"), metadata=ann)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # only the portal may speak for someone else
    code, message = refused(_ask, api, ann + [("x-accesspoint-on-behalf-of", "bob")])
    assert code == grpc.StatusCode.PERMISSION_DENIED and "only the portal" in message
    code, message = refused(_ask, api, PORTAL)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "acts for no person" in message
    code, _ = refused(api.clusters.ListClusters, clusters_pb2.ListClustersRequest(), metadata=PORTAL)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = refused(_ask, api, on_behalf_of("dora") + [("x-accesspoint-on-behalf-of", "erin")])
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    asked = _ask(api, on_behalf_of("dora", "devs"))
    assert asked.user == "dora"
    assert plane.store.audit()[-1].actor == "user:dora via token:portal"
    # service tokens, and people whose token, user or group is revoked, are nobody here
    api.services.CreateServiceIdentity(tokens_pb2.CreateServiceIdentityRequest(
        service_identity=tokens_pb2.ServiceIdentity(name="argocd")), metadata=ADMIN)
    service = api.tokens.IssueToken(tokens_pb2.IssueTokenRequest(service="argocd"), metadata=ADMIN)
    code, _ = refused(_ask, api, [("authorization", f"Bearer {service.secret}")])
    assert code == grpc.StatusCode.UNAUTHENTICATED
    frank = api.person("frank")
    api.revocations.Revoke(revocations_pb2.RevokeRequest(kind="group", value="devs"), metadata=ADMIN)
    code, _ = refused(_ask, api, ann)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    api.revocations.Revoke(revocations_pb2.RevokeRequest(kind="user", value="frank"), metadata=ADMIN)
    code, _ = refused(_ask, api, frank)
    assert code == grpc.StatusCode.UNAUTHENTICATED


BREAK_GLASS = settings_pb2.BreakGlassPolicy(role="viewer", group="sre", max_duration=HOUR,
                                            clusters=bindings_pb2.ClusterSelector(selector={"env": "prod"}))


def _activate(api: Api, metadata, **fields) -> bindings_pb2.Binding:
    request = access_pb2.ActivateBreakGlassRequest(**{"cluster": "prod-eu", "reason": "prod is down", **fields})
    return api.access.ActivateBreakGlass(request, metadata=metadata)


def test_break_glass_is_capped_alerted_and_can_be_switched_off(api, plane, redis_client, signing_key, caplog):
    sre = api.person("sam", "sre")
    code, message = refused(_activate, api, sre)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "settings.break_glass.role" in message
    api.settle(break_glass=BREAK_GLASS)

    with caplog.at_level(logging.WARNING, logger="accesspoint.controlplane.alerts"):
        binding = _activate(api, sre, duration=Duration(seconds=900))
    assert (binding.grant.kind, binding.grant.id, binding.grant.reason) == ("break_glass", binding.name, "prod is down")
    assert _seconds_between(binding.valid_from, binding.valid_until) == 900
    (alert,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "BREAK-GLASS" in alert.getMessage() and "'sam'" in alert.getMessage() and "prod is down" in alert.getMessage()
    assert (plane.store.audit()[-1].actor, plane.store.audit()[-1].action) == ("user:sam", "break_glass.activate")
    (grant,) = published(redis_client, signing_key)["bindings"]
    assert grant == {"name": binding.name, "role": "viewer", "subjects": [{"kind": "user", "name": "sam"}],
                     "clusters": {"names": ["prod-eu"], "selector": {}},
                     "valid_from": binding.valid_from.ToJsonString(), "valid_until": binding.valid_until.ToJsonString(),
                     "grant": {"kind": "break_glass", "id": binding.name, "reason": "prod is down"}}
    snapshot = verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key())
    pods = parse_request_info("GET", "/api/v1/namespaces/default/pods", "")
    decision = snapshot.policy.decide(Identity(user="sam", groups=("sre",)), snapshot.clusters["prod-eu"], pods)
    assert (decision.allowed, decision.break_glass, decision.grant_id) == (True, True, binding.name)
    # unset duration: the policy's cap
    capped = _activate(api, on_behalf_of("sam", "sre"))
    assert _seconds_between(capped.valid_from, capped.valid_until) == 3600

    revision = plane.store.revision()
    for metadata, fields, code, text in [
        (sre, dict(duration=Duration(seconds=3601)), grpc.StatusCode.INVALID_ARGUMENT, "duration: at most 3600 s"),
        (sre, dict(reason=""), grpc.StatusCode.INVALID_ARGUMENT, "reason"),
        (sre, dict(cluster="dev-eu"), grpc.StatusCode.PERMISSION_DENIED, "dev-eu"),
        (api.person("ann", "devs"), {}, grpc.StatusCode.PERMISSION_DENIED, "sre"),
    ]:
        assert refused(_activate, api, metadata, **fields)[0] == code
        assert text in refused(_activate, api, metadata, **fields)[1]
    assert plane.store.revision() == revision + 1   # ann's token only

    api.settle(break_glass=BREAK_GLASS, break_glass_enabled=False)
    code, message = refused(_activate, api, sre)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "disabled fleet-wide" in message
    # the kill switch also reaches the gateways, which then apply no break-glass binding anywhere
    snapshot = verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key())
    assert snapshot.data["settings"] == {"break_glass_enabled": False}
    assert not snapshot.policy.decide(Identity(user="sam", groups=("sre",)), snapshot.clusters["prod-eu"],
                                      pods).allowed


def test_session_bound_credentials_and_logout_revokes_at_once(api, plane, redis_client, signing_key):
    session = api.sessions.CreateSession(sessions_pb2.CreateSessionRequest(user="ann"), metadata=PORTAL)
    assert (session.user, session.idle_timeout.seconds, session.HasField("ended_at")) == ("ann", 3600, False)
    touched = api.sessions.TouchSession(sessions_pb2.TouchSessionRequest(id=session.id), metadata=PORTAL)
    assert touched.last_seen_at.ToDatetime() >= session.last_seen_at.ToDatetime()

    issued = api.kubeconfigs.IssueKubeconfig(kubeconfigs_pb2.IssueKubeconfigRequest(
        user="ann", cluster="prod-eu", session=session.id), metadata=ADMIN)
    assert issued.certificate.session == session.id
    cert = x509.load_pem_x509_certificate(_client_cert_pem(issued.kubeconfig))
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == [f"urn:accesspoint:session:{session.id}"]
    before = verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key())
    assert before.authenticator.authenticate(cert, None).session == session.id
    token = api.tokens.IssueToken(tokens_pb2.IssueTokenRequest(user="ann", channel="terminal", session=session.id),
                                  metadata=ADMIN)
    (entry,) = published(redis_client, signing_key)["tokens"]
    assert (entry["id"], entry["channel"], entry["session"]) == (token.token.id, "terminal", session.id)
    # a credential binds only to a live session of its own user
    code, message = refused(api.kubeconfigs.IssueKubeconfig, kubeconfigs_pb2.IssueKubeconfigRequest(
        user="bob", cluster="prod-eu", session=session.id), metadata=ADMIN)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "another user" in message
    code, _ = refused(api.sessions.LogoutSession, sessions_pb2.LogoutSessionRequest(id=session.id),
                      metadata=api.person("bob"))
    assert code == grpc.StatusCode.PERMISSION_DENIED

    deltas = subscribe(redis_client, REVOCATION_CHANNEL)
    logged_out = api.sessions.LogoutSession(sessions_pb2.LogoutSessionRequest(id=session.id),
                                            metadata=on_behalf_of("ann"))
    delta = verify_revocation_delta(next_message(deltas), signing_key.public_key())
    deltas.close()
    assert (delta["revision"], delta["revocations"]) == (logged_out.revision, {"sessions": [session.id]})
    after = verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key())
    assert after.data["revocations"]["sessions"] == [session.id]
    # the gateways refuse the session's certificate and token from this snapshot on
    with pytest.raises(AuthenticationError, match="session"):
        after.authenticator.authenticate(cert, None)
    with pytest.raises(AuthenticationError, match="session"):
        after.authenticator.authenticate(None, f"Bearer {token.secret}".encode())
    (ended,) = api.sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=READER).sessions
    assert (ended.end_reason, ended.HasField("ended_at")) == ("logout", True)
    for call, request in [(api.sessions.TouchSession, sessions_pb2.TouchSessionRequest(id=session.id)),
                          (api.sessions.LogoutSession, sessions_pb2.LogoutSessionRequest(id=session.id))]:
        code, message = refused(call, request, metadata=PORTAL)
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "ended (logout)" in message
    code, _ = refused(api.kubeconfigs.IssueKubeconfig, kubeconfigs_pb2.IssueKubeconfigRequest(
        user="ann", cluster="prod-eu", session=session.id), metadata=ADMIN)
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def _client_cert_pem(kubeconfig: str) -> bytes:
    return base64.b64decode(yaml.safe_load(kubeconfig)["users"][0]["user"]["client-certificate-data"])
