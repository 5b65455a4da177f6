"""Authentication, impersonation and RBAC decisions and their exact messages."""
from __future__ import annotations

import pytest

from tests.fakekube.auth import Authenticator, Rbac, UserInfo, forbidden, impersonate
from tests.fakekube.httpcore import Request
from tests.fakekube.requestinfo import RequestInfo, parse
from tests.fakekube.status import ApiError

RBAC = Rbac({"users": {"alice": "admin", "bob": "view"}, "groups": {"viewers": "view"}})
GATEWAY = UserInfo("gw", ("system:authenticated",), may_impersonate=True)


def _request(method: str, target: str, *headers: tuple[str, str]) -> Request:
    return Request(method, target, [(k.lower().encode(), v.encode()) for k, v in headers])


def test_bearer_token_must_be_the_gateways() -> None:
    auth = Authenticator("s3cret", gateway_user="gw")
    assert auth.authenticate(_request("GET", "/api", ("Authorization", "Bearer s3cret"))).may_impersonate
    for headers in [(), (("Authorization", "Bearer wrong"),), (("Authorization", "Basic s3cret"),)]:
        with pytest.raises(ApiError) as err:
            auth.authenticate(_request("GET", "/api", *headers))
        assert err.value.status() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


def test_impersonation_sets_user_groups_uid_extra_and_adds_authenticated() -> None:
    request = _request("GET", "/api", ("Impersonate-User", "carol"), ("Impersonate-Group", "a"),
                       ("Impersonate-Group", "b"), ("Impersonate-Uid", "u1"),
                       ("Impersonate-Extra-Request%2fId", "r1"))
    user = impersonate(request, GATEWAY, RBAC)
    assert (user.name, user.groups, user.uid) == ("carol", ("a", "b", "system:authenticated"), "u1")
    assert user.extra == {"request/id": ("r1",)}
    sa = impersonate(_request("GET", "/", ("Impersonate-User", "system:serviceaccount:ns1:robot")), GATEWAY, RBAC)
    assert sa.groups == ("system:serviceaccounts", "system:serviceaccounts:ns1", "system:authenticated")


def test_only_privileged_callers_may_impersonate() -> None:
    request = _request("GET", "/api", ("Impersonate-User", "alice"))
    with pytest.raises(ApiError) as err:
        impersonate(request, UserInfo("bob", ("system:authenticated",)), RBAC)
    assert err.value.message == ('users "alice" is forbidden: User "bob" cannot impersonate resource "users" '
                                 'in API group "" at the cluster scope')
    with pytest.raises(ApiError) as err:
        impersonate(_request("GET", "/api", ("Impersonate-Group", "g")), GATEWAY, RBAC)
    assert err.value.code == 500


def test_roles_admin_view_and_none() -> None:
    create = parse(_request("POST", "/api/v1/namespaces/default/pods"))
    get = parse(_request("GET", "/api/v1/namespaces/default/pods/p"))
    exec_get = parse(_request("GET", "/api/v1/namespaces/default/pods/p/exec?command=ls"))
    bob, carol_viewer, dave = UserInfo("bob"), UserInfo("carol", ("viewers",)), UserInfo("dave")
    assert RBAC.allows(UserInfo("alice"), create)
    assert not RBAC.allows(bob, create) and RBAC.allows(bob, get) and RBAC.allows(carol_viewer, get)
    assert not RBAC.allows(bob, exec_get), "exec is never read-only"
    assert not RBAC.allows(dave, get)
    assert RBAC.allows(dave, parse(_request("GET", "/version"))), "discovery is public to authenticated users"
    assert RBAC.allows(dave, parse(_request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")))


@pytest.mark.parametrize("method,target,message,details", [
    ("POST", "/api/v1/namespaces/default/pods",
     'pods is forbidden: User "bob" cannot create resource "pods" in API group "" in the namespace "default"',
     {"kind": "pods"}),
    ("GET", "/api/v1/namespaces/default/pods/web-0/log",
     'pods "web-0" is forbidden: User "bob" cannot get resource "pods/log" in API group "" in the namespace "default"',
     {"name": "web-0", "kind": "pods"}),
    ("GET", "/apis/apps/v1/deployments?watch=true",
     'deployments.apps is forbidden: User "bob" cannot watch resource "deployments" in API group "apps" at the cluster scope',
     {"group": "apps", "kind": "deployments"}),
    ("GET", "/api/v1/namespaces",
     'namespaces is forbidden: User "bob" cannot list resource "namespaces" in API group "" at the cluster scope',
     {"kind": "namespaces"}),
    ("GET", "/logs", 'forbidden: User "bob" cannot get path "/logs"', {}),
])
def test_forbidden_messages(method: str, target: str, message: str, details: dict) -> None:
    err = forbidden(UserInfo("bob"), parse(_request(method, target)))
    body = err.status()
    assert (body["code"], body["reason"], body["message"], body["details"]) == (403, "Forbidden", message, details)


def test_request_info_like_the_api_server() -> None:
    info = parse(_request("GET", "/api/v1/watch/namespaces/ns1/pods"))
    assert (info.verb, info.namespace, info.resource) == ("watch", "ns1", "pods")
    info = parse(_request("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-0&watch=1"))
    assert (info.verb, info.name) == ("watch", "web-0")
    info = parse(_request("DELETE", "/apis/apps/v1/namespaces/default/deployments"))
    assert info.verb == "deletecollection"
    info = parse(_request("GET", "/api/v1/namespaces/ns1"))
    assert (info.resource, info.name, info.namespace) == ("namespaces", "ns1", "ns1")
    assert parse(_request("GET", "/api/v1")) == RequestInfo(False, "get", "/api/v1")
