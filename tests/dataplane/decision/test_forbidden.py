import pytest

from dataplane.identity import Identity
from dataplane.policy import forbidden_message, go_quote

from .helpers import Attrs, nonresource

BOB = Identity("bob", ("devs",))


@pytest.mark.parametrize("info, expected", [
    (Attrs("create", resource="pods", namespace="default"),
     'pods is forbidden: User "bob" cannot create resource "pods" in API group "" in the namespace "default"'),
    (Attrs("create", resource="pods", subresource="exec", name="web-0", namespace="default"),
     'pods "web-0" is forbidden: User "bob" cannot create resource "pods/exec" in API group "" '
     'in the namespace "default"'),
    (Attrs("list", resource="namespaces"),
     'namespaces is forbidden: User "bob" cannot list resource "namespaces" in API group "" at the cluster scope'),
    (Attrs("get", resource="deployments", api_group="apps", name="web", namespace="team-a"),
     'deployments.apps "web" is forbidden: User "bob" cannot get resource "deployments" in API group "apps" '
     'in the namespace "team-a"'),
    (Attrs("update", resource="budgets", subresource="status", api_group="cost.example.com", name="q3",
           namespace="team-a"),
     'budgets.cost.example.com "q3" is forbidden: User "bob" cannot update resource "budgets/status" '
     'in API group "cost.example.com" in the namespace "team-a"'),
    (Attrs("get", resource="nodes", name="n1"),
     'nodes "n1" is forbidden: User "bob" cannot get resource "nodes" in API group "" at the cluster scope'),
    (nonresource("get", "/version"), 'forbidden: User "bob" cannot get path "/version"'),
])
def test_messages_match_the_api_server(info, expected):
    assert forbidden_message(BOB, info) == expected


def test_html_is_sanitised_in_the_detail_like_the_api_server():
    message = forbidden_message(Identity('<b>"x"</b>', ()), nonresource("get", "/a&b"))
    assert message == r'forbidden: User "&lt;b&gt;\"x\"&lt;/b&gt;" cannot get path "/a&amp;b"'


@pytest.mark.parametrize("text, quoted", [
    ("plain", '"plain"'),
    ('q"b\\s', r'"q\"b\\s"'),
    ("tab\tnl\n", r'"tab\tnl\n"'),
    ("\x00\x7f", r'"\x00\x7f"'),
    ("é✓", '"é✓"'),
    ("\u00a0\u2028", r'"\u00a0\u2028"'),
    ("\U000e0001", r'"\U000e0001"'),
])
def test_go_quote_matches_strconv_quote(text, quoted):
    assert go_quote(text) == quoted
