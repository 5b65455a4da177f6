"""docs/policy.md at the gateway-facing API: strict snapshot fields, Decision provenance and
reasons, group compaction, and the identity's channel and session."""
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dataplane.identity import AuthenticationError, Authenticator, Identity
from dataplane.policy import Decision, forbidden_message
from dataplane.snapshot import Snapshot, SnapshotError, validate

from .helpers import Attrs, cluster, rule, sha256_hex, snapshot_data

PODS = Attrs("get", resource="pods", namespace="default")
ANN = Identity("ann", ("devs", "idp-a", "idp-b"))


def binding(name, **fields):
    return {"name": name, "role": "viewer", "subjects": [{"kind": "group", "name": "devs"}],
            "clusters": {"names": ["*"]}, **fields}


def with_binding(**fields):
    return snapshot_data(bindings=[binding("b", **fields)])


# -- strict validation of the new fields ---------------------------------------------------------------

VALID = [
    with_binding(effect="deny"),
    with_binding(clusters={"match_expressions": [{"key": "env", "operator": "In", "values": ["dev"]},
                                                 {"key": "tier", "operator": "DoesNotExist"}]}),
    with_binding(valid_from="2026-11-23T08:00:00Z", valid_until="2026-11-24T08:00:00Z"),
    with_binding(conditions={"source_cidrs": ["10.0.0.0/8", "2001:db8::/32"], "channels": ["terminal"],
                             "schedule": {"days": ["mon", "fri"], "start": "08:00", "end": "24:00"}}),
    with_binding(conditions={"source_cidrs": [], "channels": [], "schedule": {}}),
    with_binding(grant={"kind": "break_glass", "id": "bg-1", "reason": "outage"}),
    with_binding(grant={"kind": "binding"}),
    snapshot_data(clusters=[dict(cluster("a"), read_only=True, upstream_groups=["cluster-admins"])]),
    snapshot_data(settings={"break_glass_enabled": False, "group_compaction": True, "max_exec_sessions": 2,
                            "max_watches": 0}),
    snapshot_data(tokens=[{"id": "t", "sha256": sha256_hex("x"), "user": "u", "channel": "terminal",
                           "session": "s-1"},
                          {"id": "t2", "sha256": sha256_hex("y"), "user": "u", "session": None}]),
]


@pytest.mark.parametrize("data", VALID)
def test_new_fields_are_accepted(data):
    validate(data)
    Snapshot(data)


def test_todays_snapshots_stay_valid():
    validate(snapshot_data())


INVALID = {
    "bindings[0].effect": with_binding(effect="maybe"),
    "bindings[0].clusters.match_expressions[0].operator": with_binding(
        clusters={"match_expressions": [{"key": "env", "operator": "Like", "values": ["dev"]}]}),
    "bindings[0].clusters.match_expressions[0].values must not be empty": with_binding(
        clusters={"match_expressions": [{"key": "env", "operator": "In"}]}),
    "bindings[0].clusters.match_expressions[0].values must be empty": with_binding(
        clusters={"match_expressions": [{"key": "env", "operator": "Exists", "values": ["x"]}]}),
    "bindings[0].clusters.match_expressions[0].key": with_binding(
        clusters={"match_expressions": [{"key": "", "operator": "Exists"}]}),
    "bindings[0].valid_from must be a UTC time": with_binding(valid_from="2026-11-23 08:00"),
    "bindings[0].valid_until must be a UTC time": with_binding(valid_until="2026-02-30T08:00:00Z"),
    "bindings[0].valid_from must be before valid_until": with_binding(
        valid_from="2026-11-23T08:00:00Z", valid_until="2026-11-23T08:00:00Z"),
    "bindings[0].conditions.source_cidrs[0]": with_binding(conditions={"source_cidrs": ["10.0.0.1/8"]}),
    "bindings[0].conditions.source_cidrs[1]": with_binding(conditions={"source_cidrs": ["10.0.0.0/8", "nope"]}),
    "bindings[0].conditions.channels[0]": with_binding(conditions={"channels": ["browser"]}),
    "bindings[0].conditions: unknown": with_binding(conditions={"weather": "sunny"}),
    "bindings[0].conditions.schedule.days[0]": with_binding(conditions={"schedule": {"days": ["monday"]}}),
    "bindings[0].conditions.schedule.days must not repeat": with_binding(
        conditions={"schedule": {"days": ["mon", "mon"]}}),
    "bindings[0].conditions.schedule.start must be a UTC time": with_binding(
        conditions={"schedule": {"start": "24:00"}}),
    "bindings[0].conditions.schedule.end must be a UTC time": with_binding(conditions={"schedule": {"end": "9:00"}}),
    "bindings[0].conditions.schedule.start must be before end": with_binding(
        conditions={"schedule": {"start": "18:00", "end": "08:00"}}),
    "bindings[0].grant.kind": with_binding(grant={"kind": "gift"}),
    "bindings[0].grant.id must name the break glass": with_binding(grant={"kind": "break_glass"}),
    "bindings[0].grant: unknown": with_binding(grant={"kind": "binding", "approver": "x"}),
    "clusters[0].read_only must be a boolean": snapshot_data(clusters=[dict(cluster("a"), read_only="yes")]),
    "clusters[0].upstream_groups[0] must not be empty": snapshot_data(
        clusters=[dict(cluster("a"), upstream_groups=[""])]),
    "settings: unknown": snapshot_data(settings={"turbo": True}),
    "settings.break_glass_enabled must be a boolean": snapshot_data(settings={"break_glass_enabled": 1}),
    "settings.max_watches must not be negative": snapshot_data(settings={"max_watches": -1}),
    "settings.max_exec_sessions must be an integer": snapshot_data(settings={"max_exec_sessions": True}),
    "tokens[0].channel": snapshot_data(tokens=[{"id": "t", "sha256": sha256_hex("x"), "user": "u",
                                                "channel": "web"}]),
    "tokens[0].session": snapshot_data(tokens=[{"id": "t", "sha256": sha256_hex("x"), "user": "u", "session": ""}]),
}


@pytest.mark.parametrize("field", INVALID)
def test_invalid_new_fields_are_refused_naming_the_field(field):
    with pytest.raises(SnapshotError) as caught:
        validate(INVALID[field])
    assert str(caught.value).startswith(field), str(caught.value)


# -- decisions with provenance -------------------------------------------------------------------------

def policy_of(bindings, clusters=None, settings=None, roles=None):
    data = snapshot_data(bindings=bindings, settings=settings or {}, **({"clusters": clusters} if clusters else {}),
                         **({"roles": roles} if roles else {}))
    validate(data)
    snapshot = Snapshot(data)
    return snapshot.policy, snapshot.clusters


def test_allow_by_a_grant_names_it():
    policy, clusters = policy_of([binding("bg", grant={"kind": "break_glass", "id": "bg-7", "reason": "outage"})])
    decision = policy.decide(ANN, clusters["prod-eu"], PODS)
    assert decision == Decision(True, 'binding "bg" (role "viewer") from break glass "bg-7"', "bg", "viewer",
                                effect="allow", grant_kind="break_glass", grant_id="bg-7", break_glass=True)
    assert decision.decided_by() == {"binding": "bg", "role": "viewer", "effect": "allow",
                                     "grant_kind": "break_glass", "grant_id": "bg-7"}
    assert policy.decide(ANN, clusters["prod-eu"], PODS) is decision     # cached: nothing allocated


def test_deny_binding_is_explained_to_the_caller():
    policy, clusters = policy_of([binding("view"), binding("freeze", effect="deny")])
    decision = policy.decide(ANN, clusters["sandbox"], PODS)
    assert not decision.allowed and decision.effect == "deny" and decision.explained
    assert decision.reason == 'deny binding "freeze" (role "viewer")' and not decision.break_glass
    assert forbidden_message(ANN, PODS, decision.reason) == (
        'pods is forbidden: User "ann" cannot get resource "pods" in API group "" in the namespace "default": '
        'deny binding "freeze" (role "viewer")')


def test_kill_switch_decisions_name_no_binding():
    policy, clusters = policy_of([binding("view")], clusters=[dict(cluster("off"), kubectl_enabled=False),
                                                              dict(cluster("ro"), read_only=True)])
    off = policy.decide(ANN, clusters["off"], PODS)
    assert (off.allowed, off.reason, off.decided_by(), off.explained) == (
        False, 'cluster "off" has kubectl access disabled', {}, True)
    assert policy.decide(ANN, clusters["ro"], Attrs("delete", resource="pods", namespace="default")).reason == \
        'cluster "ro" is read-only'
    assert policy.decide(ANN, clusters["ro"], PODS).allowed
    default = policy.decide(Identity("zed", ()), clusters["ro"], PODS)
    assert not default.explained and default.reason.startswith("no binding allows")


def test_source_and_time_reach_the_index():
    window = {"valid_until": "2026-11-23T09:00:00Z", "conditions": {"source_cidrs": ["10.0.0.0/8"]}}
    policy, clusters = policy_of([binding("temp", **window)])
    before = datetime.datetime(2026, 11, 23, 8, 59, tzinfo=datetime.timezone.utc).timestamp()
    assert policy.decide(ANN, clusters["sandbox"], PODS, source="10.0.0.1", now=before).allowed
    assert not policy.decide(ANN, clusters["sandbox"], PODS, source="192.0.2.1", now=before).allowed
    assert not policy.decide(ANN, clusters["sandbox"], PODS, source="10.0.0.1", now=before + 60).allowed
    assert not policy.decide(ANN, clusters["sandbox"], PODS, source="10.0.0.1").allowed    # now: long after


def test_channel_comes_from_the_identity_and_impersonation_checks_pass_it_on():
    roles = [{"name": "viewer", "rules": [rule(["get"], [""], ["pods"]), rule(["impersonate"], [""], ["users"])]}]
    policy, clusters = policy_of([binding("web", conditions={"channels": ["terminal"]})], roles=roles)
    terminal = Identity("ann", ("devs",), channel="terminal")
    assert policy.decide(terminal, clusters["sandbox"], PODS).allowed
    assert not policy.decide(ANN, clusters["sandbox"], PODS).allowed
    assert policy.decide_impersonation(terminal, clusters["sandbox"], "users", "bob").allowed
    assert not policy.decide_impersonation(ANN, clusters["sandbox"], "users", "bob").allowed


def test_group_compaction():
    clusters = [dict(cluster("sandbox"), upstream_groups=["cluster-admins"]), cluster("other")]
    groups = ("devs", "idp-a", "cluster-admins", "system:authenticated")
    policy, by_name = policy_of([binding("view")], clusters=clusters, settings={"group_compaction": True})
    assert policy.upstream_groups(groups, by_name["sandbox"]) == ("devs", "cluster-admins", "system:authenticated")
    assert policy.upstream_groups(groups, by_name["other"]) == ("devs", "system:authenticated")
    uncompacted, by_name = policy_of([binding("view")], clusters=clusters)
    assert uncompacted.upstream_groups(groups, by_name["other"]) == groups


# -- identity: channel and session ---------------------------------------------------------------------

def test_tokens_carry_channel_and_session_and_a_revoked_session_is_refused():
    tokens = [{"id": "t-web", "sha256": sha256_hex("web-token"), "user": "ann", "groups": ["devs"],
               "channel": "terminal", "session": "s-1"},
              {"id": "t-cli", "sha256": sha256_hex("cli-token"), "user": "ann", "groups": ["devs"]}]
    identity = Authenticator(snapshot_data(tokens=tokens)).authenticate(None, b"Bearer web-token")
    assert (identity.channel, identity.session) == ("terminal", "s-1")
    plain = Authenticator(snapshot_data(tokens=tokens)).authenticate(None, b"Bearer cli-token")
    assert (plain.channel, plain.session) == ("kubectl", "")
    revoked = Authenticator(snapshot_data(tokens=tokens, revocations={"sessions": ["s-1"]}))
    with pytest.raises(AuthenticationError) as caught:
        revoked.authenticate(None, b"Bearer web-token")
    assert caught.value.reason == "revoked"
    assert revoked.authenticate(None, b"Bearer cli-token").user == "ann"


def _cert(ca, uris):
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ann")]))
               .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1)))
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def test_certificates_carry_their_session_as_a_uri_san(ca):
    auth = Authenticator(snapshot_data(revocations={"sessions": ["s-9"]}))
    assert auth.authenticate(_cert(ca, ["urn:accesspoint:session:s-2", "https://ann.example"]), None).session == "s-2"
    assert auth.authenticate(_cert(ca, []), None).session == ""
    for uris, reason in ((["urn:accesspoint:session:s-9"], "revoked"),
                         (["urn:accesspoint:session:a", "urn:accesspoint:session:b"], "bad_certificate"),
                         (["urn:accesspoint:session:"], "bad_certificate")):
        with pytest.raises(AuthenticationError) as caught:
            auth.authenticate(_cert(ca, uris), None)
        assert caught.value.reason == reason, uris
