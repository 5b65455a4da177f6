"""The policy model through the API (docs/policy.md): deny bindings, selector expressions,
conditions, windows and kill switches land in the signed snapshot in exactly the documented form;
settings; bad input is INVALID_ARGUMENT naming the field and changes nothing; who may call what."""
from __future__ import annotations

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from controlplane.api.v1 import (bindings_pb2, bindings_pb2_grpc, clusters_pb2, clusters_pb2_grpc, roles_pb2,
                                 roles_pb2_grpc, settings_pb2, settings_pb2_grpc, tokens_pb2, tokens_pb2_grpc)
from controlplane.snapshots import SNAPSHOT_KEY
from dataplane.snapshot import verify_snapshot

from .planes import ADMIN, READER
from .test_api import VIEWER, a_binding, a_cluster


def published(redis_client, signing_key) -> dict:
    """The payload gateways receive, after the gateways' own signature and schema check."""
    return verify_snapshot(redis_client.get(SNAPSHOT_KEY), signing_key.public_key()).data


def stamp(text: str) -> Timestamp:
    value = Timestamp()
    value.FromJsonString(text)
    return value


def refused(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value.code(), caught.value.details()


EVERYTHING = bindings_pb2.Binding(
    name="no-prod-secrets", role="viewer", effect="deny",
    subjects=[bindings_pb2.Subject(kind="group", name="contractors")],
    clusters=bindings_pb2.ClusterSelector(selector={"region": "eu"}, match_expressions=[
        bindings_pb2.LabelSelectorRequirement(key="env", operator="In", values=["prod", "staging"]),
        bindings_pb2.LabelSelectorRequirement(key="legacy", operator="DoesNotExist")]),
    conditions=bindings_pb2.Conditions(source_cidrs=["10.0.0.0/8", "2001:db8::/32"], channels=["terminal"],
                                       schedule=bindings_pb2.Schedule(days=["mon", "fri"], start="08:00")),
    valid_from=stamp("2026-01-01T00:00:00Z"), valid_until=stamp("2999-01-01T00:00:00Z"))


def test_every_policy_field_reaches_the_snapshot_in_the_documented_form(channel, redis_client, signing_key):
    clusters = clusters_pb2_grpc.ClusterServiceStub(channel)
    clusters.RegisterCluster(clusters_pb2.RegisterClusterRequest(cluster=a_cluster(
        read_only=True, kubectl_enabled=False, upstream_groups=["oncall", "system:masters"])), metadata=ADMIN)
    clusters.RegisterCluster(clusters_pb2.RegisterClusterRequest(cluster=a_cluster(name="plain")), metadata=ADMIN)
    roles_pb2_grpc.RoleServiceStub(channel).CreateRole(roles_pb2.CreateRoleRequest(role=VIEWER), metadata=ADMIN)
    bindings = bindings_pb2_grpc.BindingServiceStub(channel)
    created = bindings.CreateBinding(bindings_pb2.CreateBindingRequest(binding=EVERYTHING), metadata=ADMIN)
    bindings.CreateBinding(bindings_pb2.CreateBindingRequest(binding=a_binding()), metadata=ADMIN)
    tokens_pb2_grpc.TokenServiceStub(channel).IssueToken(
        tokens_pb2.IssueTokenRequest(user="ann", channel="terminal"), metadata=ADMIN)

    # the API answers what it stored; the schedule's unset end is the documented default
    assert created.effect == "deny" and created.conditions.schedule.end == "24:00"
    assert (created.grant.kind, created.grant.id) == ("binding", "no-prod-secrets")
    assert bindings.GetBinding(bindings_pb2.GetBindingRequest(name="no-prod-secrets"), metadata=READER) == created

    data = published(redis_client, signing_key)
    by_name = {c["name"]: c for c in data["clusters"]}
    assert (by_name["sandbox"]["kubectl_enabled"], by_name["sandbox"]["read_only"],
            by_name["sandbox"]["upstream_groups"]) == (False, True, ["oncall", "system:masters"])
    # defaults are left out: absent means the default (docs/policy.md)
    assert "read_only" not in by_name["plain"] and "upstream_groups" not in by_name["plain"]
    assert data["bindings"] == [
        {"name": "devs-view", "role": "viewer", "subjects": [{"kind": "group", "name": "devs"}],
         "clusters": {"names": [], "selector": {"env": "dev"}}},
        {"name": "no-prod-secrets", "role": "viewer", "effect": "deny",
         "subjects": [{"kind": "group", "name": "contractors"}],
         "clusters": {"names": [], "selector": {"region": "eu"}, "match_expressions": [
             {"key": "env", "operator": "In", "values": ["prod", "staging"]},
             {"key": "legacy", "operator": "DoesNotExist", "values": []}]},
         "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2999-01-01T00:00:00Z",
         "conditions": {"source_cidrs": ["10.0.0.0/8", "2001:db8::/32"], "channels": ["terminal"],
                        "schedule": {"days": ["mon", "fri"], "start": "08:00", "end": "24:00"}}},
    ]
    assert [(t["user"], t["channel"]) for t in data["tokens"]] == [("ann", "terminal")]
    assert data["settings"] == {}


def test_settings_are_read_updated_and_published(channel, redis_client, signing_key):
    stub = settings_pb2_grpc.SettingsServiceStub(channel)
    defaults = stub.GetSettings(settings_pb2.GetSettingsRequest(), metadata=READER)
    assert (defaults.break_glass_enabled, defaults.max_watches, defaults.revision) == (True, 0, 0)
    assert (defaults.access_request_max_duration.seconds, defaults.session_idle_timeout.seconds) == (8 * 3600, 3600)
    updated = stub.UpdateSettings(settings_pb2.UpdateSettingsRequest(settings=settings_pb2.Settings(
        break_glass_enabled=False, group_compaction=True, max_exec_sessions=3, max_watches=50,
        approver_group="approvers")), metadata=ADMIN)
    assert updated.revision == 1
    assert stub.GetSettings(settings_pb2.GetSettingsRequest(), metadata=READER) == updated
    assert published(redis_client, signing_key)["settings"] == {
        "break_glass_enabled": False, "group_compaction": True, "max_exec_sessions": 3, "max_watches": 50}
    # optimistic concurrency, as for every other object
    code, message = refused(stub.UpdateSettings, settings_pb2.UpdateSettingsRequest(
        settings=settings_pb2.Settings(), expected_revision=7), metadata=ADMIN)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "revision 1" in message
    code, _ = refused(stub.UpdateSettings, settings_pb2.UpdateSettingsRequest(settings=settings_pb2.Settings()),
                      metadata=READER)
    assert code == grpc.StatusCode.PERMISSION_DENIED


def _binding(**fields) -> bindings_pb2.Binding:
    return a_binding(name="other", **fields)


REQ = bindings_pb2.LabelSelectorRequirement
BAD_BINDINGS = [
    (_binding(effect="maybe"), "binding.effect"),
    (_binding(clusters=bindings_pb2.ClusterSelector(match_expressions=[REQ(key="env", operator="Like", values=["x"])])),
     "binding.clusters.match_expressions[0].operator"),
    (_binding(clusters=bindings_pb2.ClusterSelector(match_expressions=[REQ(key="env", operator="In")])),
     "binding.clusters.match_expressions[0].values"),
    (_binding(clusters=bindings_pb2.ClusterSelector(match_expressions=[REQ(key="env", operator="Exists",
                                                                           values=["x"])])),
     "binding.clusters.match_expressions[0].values"),
    (_binding(clusters=bindings_pb2.ClusterSelector(match_expressions=[REQ(key="bad key!", operator="Exists")])),
     "binding.clusters.match_expressions[0].key"),
    (_binding(clusters=bindings_pb2.ClusterSelector(match_expressions=[REQ(key="env", operator="In",
                                                                           values=["prod", "not a value!"])])),
     "binding.clusters.match_expressions[0].values[1]"),
    (_binding(clusters=bindings_pb2.ClusterSelector()), "binding.clusters"),
    (_binding(conditions=bindings_pb2.Conditions(source_cidrs=["10.0.0.1/8"])), "binding.conditions.source_cidrs[0]"),
    (_binding(conditions=bindings_pb2.Conditions(source_cidrs=["eu-west"])), "binding.conditions.source_cidrs[0]"),
    (_binding(conditions=bindings_pb2.Conditions(channels=["kubectl", "email"])), "binding.conditions.channels[1]"),
    (_binding(conditions=bindings_pb2.Conditions(channels=["kubectl", "kubectl"])), "binding.conditions.channels"),
    (_binding(conditions=bindings_pb2.Conditions(schedule=bindings_pb2.Schedule(days=["monday"]))),
     "binding.conditions.schedule.days[0]"),
    (_binding(conditions=bindings_pb2.Conditions(schedule=bindings_pb2.Schedule(start="25:00"))),
     "binding.conditions.schedule.start"),
    (_binding(conditions=bindings_pb2.Conditions(schedule=bindings_pb2.Schedule(start="18:00", end="08:00"))),
     "binding.conditions.schedule.end"),
    (_binding(valid_from=stamp("2030-01-01T00:00:00Z"), valid_until=stamp("2029-01-01T00:00:00Z")),
     "binding.valid_until"),
]


@pytest.mark.parametrize("binding, field", BAD_BINDINGS, ids=[f for _, f in BAD_BINDINGS])
def test_bad_bindings_name_the_field(channel, plane, binding, field):
    roles_pb2_grpc.RoleServiceStub(channel).CreateRole(roles_pb2.CreateRoleRequest(role=VIEWER), metadata=ADMIN)
    revision = plane.store.revision()
    code, message = refused(bindings_pb2_grpc.BindingServiceStub(channel).CreateBinding,
                            bindings_pb2.CreateBindingRequest(binding=binding), metadata=ADMIN)
    assert (code, message.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, field)
    assert plane.store.revision() == revision


def _settings(**fields) -> settings_pb2.Settings:
    return settings_pb2.Settings(**fields)


BAD_SETTINGS = [
    (_settings(max_watches=-1), "settings.max_watches"),
    (_settings(approver_group="bad\nname"), "settings.approver_group"),
    (_settings(session_idle_timeout=Duration(seconds=0)), "settings.session_idle_timeout"),
    (_settings(access_request_max_duration=Duration(seconds=1, nanos=5)), "access_request_max_duration"),
    (_settings(break_glass=settings_pb2.BreakGlassPolicy(role="emergency", group="sre")), "settings.break_glass.clusters"),
    (_settings(break_glass=settings_pb2.BreakGlassPolicy(
        role="emergency", clusters=bindings_pb2.ClusterSelector(selector={"env": "prod"}))), "settings.break_glass.group"),
    (_settings(break_glass=settings_pb2.BreakGlassPolicy(role="Bad Role")), "settings.break_glass.role"),
    (_settings(break_glass=settings_pb2.BreakGlassPolicy(max_duration=Duration(seconds=3 * 86400))),
     "settings.break_glass.max_duration"),
]


@pytest.mark.parametrize("settings, field", BAD_SETTINGS, ids=[f for _, f in BAD_SETTINGS])
def test_bad_settings_name_the_field(channel, plane, settings, field):
    code, message = refused(settings_pb2_grpc.SettingsServiceStub(channel).UpdateSettings,
                            settings_pb2.UpdateSettingsRequest(settings=settings), metadata=ADMIN)
    assert (code, message.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, field)
    assert plane.store.revision() == 0


def test_bad_clusters_and_tokens_name_the_field(channel, plane):
    code, message = refused(clusters_pb2_grpc.ClusterServiceStub(channel).RegisterCluster,
                            clusters_pb2.RegisterClusterRequest(cluster=a_cluster(upstream_groups=["ops", "ops"])),
                            metadata=ADMIN)
    assert (code, message.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "cluster.upstream_groups")
    code, message = refused(tokens_pb2_grpc.TokenServiceStub(channel).IssueToken,
                            tokens_pb2.IssueTokenRequest(user="ann", channel="browser"), metadata=ADMIN)
    assert (code, message.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "channel")
    code, message = refused(tokens_pb2_grpc.TokenServiceStub(channel).IssueToken,
                            tokens_pb2.IssueTokenRequest(user="ann", session="s-none"), metadata=ADMIN)
    assert code == grpc.StatusCode.NOT_FOUND and "s-none" in message
    assert plane.store.revision() == 0
