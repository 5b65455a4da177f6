"""Servicers of the policy's people-facing side: settings, access requests and break-glass, console
sessions. Same shape as servicers.py: convert, validate, store, publish, answer; who the person
is comes from the caller (api/caller.py), never from the request.
"""
from __future__ import annotations

import secrets
from dataclasses import replace

from .. import validation
from ..errors import InvalidArgument, PermissionDenied
from ..model import ACCESS_REQUEST_STATES, AccessRequest
from ..store import tables
from . import caller, convert
from .caller import actor
from .servicers import Dependencies, _Servicer
from .v1 import (access_pb2, access_pb2_grpc, sessions_pb2, sessions_pb2_grpc, settings_pb2, settings_pb2_grpc)


class SettingsServicer(_Servicer, settings_pb2_grpc.SettingsServiceServicer):
    def GetSettings(self, request, context):
        return convert.settings_to_proto(self._store.settings())

    def UpdateSettings(self, request, context):
        settings = convert.settings_from_proto(request.settings)
        validation.check_settings(settings)
        revision = self._store.update_settings(actor(), settings, request.expected_revision)
        self._distributor.publish_latest()
        return convert.settings_to_proto(replace(settings, revision=revision))


class AccessServicer(_Servicer, access_pb2_grpc.AccessServiceServicer):
    def CreateAccessRequest(self, request, context):
        who = caller.person()
        duration = convert.seconds_from_proto(request, "duration")
        validation.check_access_request(request.role, request.cluster, duration, request.reason)
        created = self._store.create_access_request(actor(), AccessRequest(
            id="ar-" + secrets.token_hex(6), user=who.user, role=request.role, cluster=request.cluster,
            duration=duration, reason=request.reason, created_at=""))
        return convert.access_request_to_proto(created)

    def ApproveAccessRequest(self, request, context):
        return self._decide(request, approve=True)

    def DenyAccessRequest(self, request, context):
        return self._decide(request, approve=False)

    def _decide(self, request, approve: bool):
        who = caller.person()
        validation.check_reason(request.reason, required=False)
        decided = self._store.decide_access_request(actor(), request.id, who.user, who.groups, approve, request.reason)
        if approve:
            self._distributor.publish_latest()   # the grant takes effect fleet-wide now
        return convert.access_request_to_proto(decided)

    def GetAccessRequest(self, request, context):
        return convert.access_request_to_proto(self._store.get(tables.ACCESS_REQUESTS, request.id))

    def ListAccessRequests(self, request, context):
        if request.state and request.state not in ACCESS_REQUEST_STATES:
            raise InvalidArgument("state", f"must be one of {', '.join(ACCESS_REQUEST_STATES)}")
        return access_pb2.ListAccessRequestsResponse(access_requests=[
            convert.access_request_to_proto(r) for r in self._store.access_requests()
            if (not request.state or r.state == request.state) and (not request.user or r.user == request.user)])

    def ActivateBreakGlass(self, request, context):
        who = caller.person()
        duration = convert.seconds_from_proto(request, "duration")
        validation.check_cluster_name(request.cluster, "cluster")
        if duration is not None and duration <= 0:
            raise InvalidArgument("duration", "must be more than 0 s")
        validation.check_reason(request.reason)
        binding = self._store.activate_break_glass(actor(), "bg-" + secrets.token_hex(6), who.user, who.groups,
                                                   request.cluster, duration, request.reason)
        self._distributor.publish_latest()
        return convert.binding_to_proto(binding)


class SessionServicer(_Servicer, sessions_pb2_grpc.SessionServiceServicer):
    def CreateSession(self, request, context):
        validation.check_subject_name(request.user, "user")
        session = self._store.create_session(actor(), "s-" + secrets.token_hex(8), request.user)
        return convert.session_to_proto(session)

    def TouchSession(self, request, context):
        return convert.session_to_proto(self._store.touch_session(request.id))

    def LogoutSession(self, request, context):
        who = caller.current.get()
        if who.role == caller.PERSON or (who.role == caller.PORTAL and who.user):
            # A person may end only their own session.
            if self._store.get(tables.SESSIONS, request.id).user != who.user:
                raise PermissionDenied(f"session {request.id!r} is not one of {who.user!r}'s sessions")
        revision, revocation = self._store.end_session(actor(), request.id, "logout")
        self._distributor.publish_revocation(revision, revocation)
        return sessions_pb2.LogoutSessionResponse(revision=revision)

    def ListSessions(self, request, context):
        return sessions_pb2.ListSessionsResponse(sessions=[convert.session_to_proto(s) for s in self._store.sessions()])


def add_all(server, deps: Dependencies) -> list[str]:
    """Register these servicers on `server`; returns the full service names (for reflection)."""
    registrations = [
        (SettingsServicer, settings_pb2_grpc.add_SettingsServiceServicer_to_server, settings_pb2, "SettingsService"),
        (AccessServicer, access_pb2_grpc.add_AccessServiceServicer_to_server, access_pb2, "AccessService"),
        (SessionServicer, sessions_pb2_grpc.add_SessionServiceServicer_to_server, sessions_pb2, "SessionService"),
    ]
    for servicer, add, _, _ in registrations:
        add(servicer(deps), server)
    return [module.DESCRIPTOR.services_by_name[service].full_name for _, _, module, service in registrations]
