"""Both requestinfo backends against the table of Kubernetes' requestinfo_test.go, and each other."""
import pytest
from hypothesis import given, settings, strategies as st

import native.requestinfo
from native import _requestinfo_py as oracle
from tests.native.backends import backend_id, backends

BACKENDS = backends("requestinfo")


@pytest.fixture(params=BACKENDS, ids=backend_id)
def ri(request):
    return request.param


def parse(module, method, url):
    path, _, query = url.partition("?")
    return module.parse_request_info(method, path, query)


def fields(info) -> tuple:
    return (info.is_resource_request, info.path, info.verb, info.api_prefix, info.api_group,
            info.api_version, info.namespace, info.resource, info.subresource, info.name,
            info.parts)


# TestGetAPIRequestInfo: method, url, verb, prefix, group, version, namespace, resource,
# subresource, name, parts. (Go's table says prefix "api" for /apis URLs but never checks it.)
GO_SUCCESS_CASES = [
    ("GET", "/api/v1/namespaces", "list", "api", "", "v1", "", "namespaces", "", "", ["namespaces"]),
    ("GET", "/api/v1/namespaces/other", "get", "api", "", "v1", "other", "namespaces", "", "other", ["namespaces", "other"]),
    ("GET", "/api/v1/namespaces/other/pods", "list", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("HEAD", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("GET", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("HEAD", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("PATCH", "/api/v1/namespaces/new-namespace", "patch", "api", "", "v1", "new-namespace", "namespaces", "", "new-namespace", ["namespaces", "new-namespace"]),
    ("GET", "/api/v1/proxy/namespaces/other/pods/foo", "proxy", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("GET", "/api/v1/proxy/namespaces/other/pods/foo/subpath/not/a/subresource", "proxy", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo", "subpath", "not", "a", "subresource"]),
    ("GET", "/api/v1/watch/pods", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=true", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=false", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/watch/namespaces/other/pods", "watch", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?watch=1", "watch", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?watch=0", "list", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods/foo/status", "get", "api", "", "v1", "other", "pods", "status", "foo", ["pods", "foo", "status"]),
    ("GET", "/api/v1/namespaces/other/pods/foo/proxy/subpath", "get", "api", "", "v1", "other", "pods", "proxy", "foo", ["pods", "foo", "proxy", "subpath"]),
    ("PUT", "/api/v1/namespaces/other/finalize", "update", "api", "", "v1", "other", "namespaces", "finalize", "other", ["namespaces", "other", "finalize"]),
    ("PUT", "/api/v1/namespaces/other/status", "update", "api", "", "v1", "other", "namespaces", "status", "other", ["namespaces", "other", "status"]),
    ("PATCH", "/api/v1/namespaces/other/pods/foo", "patch", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("DELETE", "/api/v1/namespaces/other/pods/foo", "delete", "api", "", "v1", "other", "pods", "", "foo", ["pods", "foo"]),
    ("POST", "/api/v1/namespaces/other/pods", "create", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("DELETE", "/api/v1/nodes", "deletecollection", "api", "", "v1", "", "nodes", "", "", ["nodes"]),
    ("DELETE", "/api/v1/namespaces", "deletecollection", "api", "", "v1", "", "namespaces", "", "", ["namespaces"]),
    ("DELETE", "/api/v1/namespaces/other/pods", "deletecollection", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    ("DELETE", "/apis/extensions/v1/namespaces/other/pods", "deletecollection", "apis", "extensions", "v1", "other", "pods", "", "", ["pods"]),
    ("POST", "/apis/extensions/v1/namespaces/other/pods", "create", "apis", "extensions", "v1", "other", "pods", "", "", ["pods"]),
    ("POST", "/apis/extensions/v1beta3/namespaces/other/pods", "create", "apis", "extensions", "v1beta3", "other", "pods", "", "", ["pods"]),
]


@pytest.mark.parametrize("case", GO_SUCCESS_CASES, ids=lambda c: f"{c[0]} {c[1]}")
def test_go_success_cases(ri, case):
    method, url, verb, prefix, group, version, namespace, resource, subresource, name, parts = case
    info = parse(ri, method, url)
    assert fields(info) == (True, url.partition("?")[0], verb, prefix, group, version, namespace,
                            resource, subresource, name, tuple(parts))


@pytest.mark.parametrize("url, resource", [
    # TestGetAPIRequestInfo error cases, then TestGetNonAPIRequestInfo
    ("/", False), ("/api/version/", False), ("/apis/group/version/", False),
    ("/badprefix/version/resource", False), ("/apis/version/resource", False),
    ("/api/version/resource", True), ("/apis/group/version/resource/name/subresource", True),
    ("/api/version/resource/name/subresource", True), ("/apis/batch/v1/job", True),
    ("/apis/batch/v1/job/foo", True), ("/apis/batch/v1/job/foo/scale", True),
    ("/not-api/version/resource", False), ("/apis/extensions/v1beta1", False),
    ("/apis/extensions/v1beta1/", False), ("/api/version", False), ("/api", False),
    ("/", False), ("", False),
])
def test_go_resource_or_not(ri, url, resource):
    assert parse(ri, "GET", url).is_resource_request is resource


@pytest.mark.parametrize("url, name, verb", [
    # TestFieldSelectorParsing
    ("/apis/group/version/resource", "", "list"),
    ("/apis/group/version/resource?fieldSelector=metadata.name=name1", "name1", "list"),
    ("/apis/group/version/resource?watch=true&fieldSelector=metadata.name=name1", "name1", "watch"),
    ("/apis/group/version/resource?fieldSelector=foo=bar", "", "list"),
    ("/apis/group/version/resource?fieldSelector=metadata.name=name1,foo", "", "list"),
    ("/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=true", "", "watch"),
    ("/apis/group/version/resource?fieldSelector=metadata.name=name1,foo&watch=false", "", "list"),
    # beyond Go's table: encoding, escapes, operators, other options that fail to decode
    ("/api/v1/pods?fieldSelector=metadata.name%3Dweb-0", "web-0", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name==a,status.phase!=x", "a", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name!=a", "", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=b,metadata.name=a", "a", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a\\,b", "a,b", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a\\x", "", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=..", "", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a%2Fb", "", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a&limit=x", "", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a&timeoutSeconds=1e3&watch=1", "", "watch"),
    ("/api/v1/pods?fieldSelector=metadata.name=a&limit=-9223372036854775808", "a", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a&limit=9223372036854775808", "", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a&labelSelector=app+in+(x,,y),!tier", "a", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a&labelSelector=app%3D%3D", "a", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a&labelSelector=x>1,y<2", "a", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a&labelSelector=y<-2", "", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a&labelSelector=x>y", "", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a&labelSelector=a=b=c", "", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a&labelSelector=-bad", "", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a&labelSelector=example.com/app", "a", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a;b", "", "list"),
    ("/api/v1/pods?fieldSelector=metadata.name=a%zz&fieldSelector=metadata.name=b", "b", "list"),
    ("/api/v1/pods?watch=TRUE", "", "watch"), ("/api/v1/pods?watch=False", "", "list"),
    ("/api/v1/pods?watch", "", "watch"), ("/api/v1/pods?%77atch=1", "", "watch"),
    ("/api/v1/pods?watch=0&watch=1", "", "list"),
    # EqualFold("falſe", "false") holds, strings.ToLower does not: decoding errors matter
    ("/api/v1/pods?watch=fal%C5%BFe", "", "list"),
    ("/api/v1/pods?watch=fal%C5%BFe&limit=x", "", "watch"),
    ("/api/v1/namespaces/ns/pods/p1?watch=1", "p1", "get"),
])
def test_list_options(ri, url, name, verb):
    info = parse(ri, "GET", url)
    assert (info.name, info.verb) == (name, verb)


@pytest.mark.parametrize("method, url, verb", [
    ("GET", "/version", "get"), ("GET", "/healthz", "get"), ("GET", "/openapi/v3/api/v1", "get"),
    ("GET", "/api", "get"), ("GET", "/apis", "get"), ("GET", "/apis/apps", "get"),
    ("POST", "/apis/apps/v1", "post"), ("OPTIONS", "/api/v1/pods", ""),
    ("get", "/api/v1/pods", ""), ("GET", "/api/v1/watch", "get"),
    ("POST", "/api/v1/namespaces/ns/pods/p1/exec", "create"),
])
def test_verbs_of_other_requests(ri, method, url, verb):
    assert parse(ri, method, url).verb == verb


def test_prefix_kept_on_short_group_paths(ri):
    info = parse(ri, "GET", "/apis/apps/v1")
    assert (info.is_resource_request, info.api_prefix, info.api_group) == (False, "apis", "")


def test_exec_and_logs(ri):
    info = parse(ri, "GET", "/api/v1/namespaces/default/pods/p1/exec?command=ls&command=-la")
    assert (info.verb, info.resource, info.subresource, info.name) == ("get", "pods", "exec", "p1")
    info = parse(ri, "GET", "/api/v1/namespaces/default/pods/p1/log?follow=true")
    assert (info.verb, info.subresource) == ("get", "log")


def test_infos_are_values(ri):
    a = parse(ri, "GET", "/api/v1/pods")
    b = parse(ri, "GET", "/api/v1/pods")
    assert a == b and hash(a) == hash(b) and a != parse(ri, "GET", "/api/v1/nodes")
    with pytest.raises(AttributeError):
        a.verb = "delete"
    assert "verb='list'" in repr(a)


def test_public_module_uses_the_selected_backend():
    assert native.requestinfo.parse_request_info is BACKENDS[-1].parse_request_info


SEGMENTS = st.sampled_from(["api", "apis", "v1", "apps", "namespaces", "ns", "pods", "p1",
                            "watch", "proxy", "status", "finalize", "log", "", "..", "x%2Fy"])
QUERY_PARTS = st.sampled_from([
    "watch=1", "watch=true", "watch=0", "watch=False", "watch", "%77atch=yes", "watch=fal%C5%BFe",
    "limit=500", "limit=x", "timeoutSeconds=5", "timeoutSeconds=", "resourceVersion=7",
    "fieldSelector=metadata.name%3Dweb", "fieldSelector=metadata.name=a,b=c",
    "fieldSelector=metadata.name!=a", "fieldSelector=metadata.name=a\\,b", "fieldSelector=x",
    "fieldSelector=metadata.name=%FF", "fieldSelector=metadata.name=%FF%3D",
    "labelSelector=app", "labelSelector=a+in+(b,c)", "labelSelector=a%3D", "labelSelector=!",
    "labelSelector=a%00b", "labelSelector=x>5", "labelSelector=in+notin+(in)",
    "a;b=c", "%zz=1", "", "+=+",
])


@settings(max_examples=500, deadline=None)
@given(method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get"]),
       segments=st.lists(SEGMENTS, max_size=8),
       leading=st.sampled_from(["/", "//", ""]), trailing=st.sampled_from(["", "/"]),
       query=st.one_of(st.lists(QUERY_PARTS, max_size=4).map("&".join), st.text(max_size=30)))
def test_differential(method, segments, leading, trailing, query):
    path = leading + "/".join(segments) + trailing
    expected = fields(oracle.parse_request_info(method, path, query))
    for module in BACKENDS:
        assert fields(module.parse_request_info(method, path, query)) == expected


@settings(max_examples=300, deadline=None)
@given(selector=st.text(alphabet="ab=!,()<>- \t\x00in/.1", max_size=16))
def test_label_selectors_never_crash(selector):
    info = oracle.parse_request_info(
        "GET", "/api/v1/pods", "fieldSelector=metadata.name=a&labelSelector=" + selector.replace("&", ""))
    assert info.name in ("", "a")
