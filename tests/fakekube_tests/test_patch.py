"""Patch semantics: RFC 7386, RFC 6902, strategic merge (schema-driven), server-side apply."""
from __future__ import annotations

import pytest

from tests.fakekube import patch
from tests.fakekube.schema import CORE, SchemaNode
from tests.fakekube.status import ApiError

POD = SchemaNode.named(CORE + "Pod")


def _pod(*containers: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}},
            "spec": {"containers": list(containers)}}


def test_merge_patch_rfc7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    result = patch.merge_patch(target, {"a": "z", "c": {"f": None}, "l": [3], "n": {"x": None}})
    assert result == {"a": "z", "c": {"d": "e"}, "l": [3], "n": {}}
    assert target["c"] == {"d": "e", "f": "g"}, "the input is not modified"


def test_json_patch_all_operations() -> None:
    doc = {"a": {"b": [1, 2, 3]}, "c": "x"}
    ops = [{"op": "add", "path": "/a/b/1", "value": 9},
           {"op": "add", "path": "/a/b/-", "value": 4},
           {"op": "remove", "path": "/a/b/0"},
           {"op": "replace", "path": "/c", "value": "y"},
           {"op": "copy", "from": "/c", "path": "/d"},
           {"op": "move", "from": "/d", "path": "/e~1f"},
           {"op": "test", "path": "/a/b", "value": [9, 2, 3, 4]}]
    assert patch.json_patch(doc, ops) == {"a": {"b": [9, 2, 3, 4]}, "c": "y", "e/f": "y"}


@pytest.mark.parametrize("ops", [
    [{"op": "test", "path": "/c", "value": "nope"}],
    [{"op": "remove", "path": "/missing"}],
    [{"op": "replace", "path": "/missing", "value": 1}],
    [{"op": "bogus", "path": "/c"}],
])
def test_json_patch_failures_are_422(ops: list) -> None:
    with pytest.raises(ApiError) as err:
        patch.json_patch({"c": "x"}, ops)
    assert err.value.code == 422


def test_strategic_merge_merges_containers_by_name_and_env_by_name() -> None:
    original = _pod({"name": "app", "image": "v1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "side", "image": "s1"})
    result = patch.strategic_merge(original, {"spec": {"containers": [
        {"name": "app", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
        {"name": "new", "image": "n1"}]}}, POD)
    containers = result["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "side", "new"]
    assert containers[0]["image"] == "v1"
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"},
                                    {"name": "C", "value": "4"}]


def test_strategic_merge_directives() -> None:
    original = _pod({"name": "app", "image": "v1", "ports": [{"containerPort": 80}, {"containerPort": 81}]},
                    {"name": "side", "image": "s1"})
    original["metadata"]["finalizers"] = ["x", "y"]
    result = patch.strategic_merge(original, {
        "metadata": {"labels": {"a": None}, "$deleteFromPrimitiveList/finalizers": ["x"]},
        "spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
                 "containers": [{"name": "app", "ports": [{"containerPort": 81, "$patch": "delete"}]}]},
    }, POD)
    assert result["metadata"]["labels"] == {"b": "2"}
    assert result["metadata"]["finalizers"] == ["y"]
    assert [c["name"] for c in result["spec"]["containers"]] == ["side", "app"]
    assert result["spec"]["containers"][1]["ports"] == [{"containerPort": 80}]


def test_strategic_merge_replace_directive_and_atomic_lists() -> None:
    original = _pod({"name": "app", "image": "v1", "command": ["a", "b"]}, {"name": "side", "image": "s1"})
    replaced = patch.strategic_merge(original, {"spec": {"containers": [{"name": "only", "image": "o"},
                                                                        {"$patch": "replace"}]}}, POD)
    assert replaced["spec"]["containers"] == [{"name": "only", "image": "o"}]
    atomic = patch.strategic_merge(original, {"spec": {"containers": [{"name": "app", "command": ["c"]}]}}, POD)
    assert atomic["spec"]["containers"][0]["command"] == ["c"]


def test_server_side_apply_merges_keyed_lists() -> None:
    live = _pod({"name": "app", "image": "v1", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                {"name": "side", "image": "s1"})
    config = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"c": "3"}},
              "spec": {"containers": [{"name": "app", "image": "v2", "ports": [{"containerPort": 80}]}]}}
    result = patch.apply_merge(live, config, POD)
    assert result["metadata"]["labels"] == {"a": "1", "b": "2", "c": "3"}
    assert result["spec"]["containers"][0] == {"name": "app", "image": "v2",
                                               "ports": [{"containerPort": 80, "protocol": "TCP"}]}
    assert result["spec"]["containers"][1]["name"] == "side"


def test_apply_body_may_be_yaml_or_json() -> None:
    assert patch.parse_apply(b"kind: ConfigMap\ndata: {a: '1'}\n") == {"kind": "ConfigMap", "data": {"a": "1"}}
    assert patch.parse_apply(b'{"kind": "ConfigMap"}') == {"kind": "ConfigMap"}
    with pytest.raises(ApiError):
        patch.parse_apply(b"- a list\n")
