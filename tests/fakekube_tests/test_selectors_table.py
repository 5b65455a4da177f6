"""Label/field selectors, Table rendering, the protobuf reader."""
from __future__ import annotations

import pytest

from tests.fakekube import protobuf
from tests.fakekube.resources import lookup
from tests.fakekube.selectors import compile_selectors
from tests.fakekube.status import ApiError
from tests.fakekube.table import human_duration, table

PODS = lookup("", "v1", "pods")


def _obj(name: str, labels: dict, phase: str = "Running") -> dict:
    return {"metadata": {"name": name, "namespace": "default", "labels": labels}, "status": {"phase": phase}}


OBJECTS = [_obj("a", {"app": "web", "tier": "fe"}), _obj("b", {"app": "db"}, "Pending"), _obj("c", {})]


@pytest.mark.parametrize("labels,fields,names", [
    ("app=web", "", ["a"]),
    ("app==web,tier", "", ["a"]),
    ("app!=web", "", ["b", "c"]),
    ("app in (web, db)", "", ["a", "b"]),
    ("app notin (web)", "", ["b", "c"]),
    ("!app", "", ["c"]),
    ("", "metadata.name=b", ["b"]),
    ("", "metadata.name!=b,metadata.namespace==default", ["a", "c"]),
    ("", "status.phase=Pending", ["b"]),
])
def test_selectors(labels: str, fields: str, names: list[str]) -> None:
    match = compile_selectors(labels, fields, PODS.field_labels)
    assert [o["metadata"]["name"] for o in OBJECTS if match(o)] == names


def test_unknown_field_label_is_400() -> None:
    with pytest.raises(ApiError) as err:
        compile_selectors("", "spec.bogus=1", PODS.field_labels)
    assert (err.value.code, err.value.message) == (400, "field label not supported: spec.bogus")


def test_pod_table_columns_and_row_objects() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "default", "creationTimestamp": "2020-01-01T00:00:00Z"},
           "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
           "status": {"phase": "Running", "podIP": "10.0.0.1",
                      "containerStatuses": [{"ready": True, "restartCount": 2}, {"ready": False, "restartCount": 1}]}}
    result = table(PODS, [pod], {"resourceVersion": "7"})
    assert [c["name"] for c in result["columnDefinitions"] if c["priority"] == 0] == \
        ["Name", "Ready", "Status", "Restarts", "Age"]
    row = result["rows"][0]
    assert row["cells"][:4] == ["p", "1/2", "Running", "3"] and row["cells"][5:7] == ["10.0.0.1", "n1"]
    assert row["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": pod["metadata"]}
    assert table(PODS, [pod], {}, "Object")["rows"][0]["object"] == pod
    assert "object" not in table(PODS, [pod], {}, "None")["rows"][0]
    assert result["metadata"] == {"resourceVersion": "7"}


@pytest.mark.parametrize("seconds,text", [(5, "5s"), (119, "119s"), (150, "2m30s"), (600, "10m"),
                                          (3 * 3600 + 60, "3h1m"), (30 * 3600, "30h"), (3 * 86400, "3d"),
                                          (400 * 86400, "400d"), (3 * 365 * 86400, "3y")])
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


def encode_review(**attrs: str) -> bytes:
    """What kubectl auth can-i sends: k8s\\0 + Unknown{TypeMeta, raw SelfSubjectAccessReview}."""
    numbers = {"namespace": 1, "verb": 2, "group": 3, "version": 4, "resource": 5, "subresource": 6, "name": 7}
    resource = b"".join(_field(numbers[k], v.encode()) for k, v in attrs.items())
    review = _field(1, b"") + _field(2, _field(1, resource)) + _field(3, b"")
    type_meta = _field(1, b"authorization.k8s.io/v1") + _field(2, b"SelfSubjectAccessReview")
    return protobuf.MAGIC + _field(1, type_meta) + _field(2, review) + _field(3, b"") + _field(4, b"")


def test_protobuf_self_subject_access_review() -> None:
    body = encode_review(namespace="default", verb="create", resource="pods", subresource="exec")
    review = protobuf.decode_object(body)
    assert (review["apiVersion"], review["kind"]) == ("authorization.k8s.io/v1", "SelfSubjectAccessReview")
    assert review["spec"] == {"resourceAttributes": {
        "namespace": "default", "verb": "create", "resource": "pods", "subresource": "exec"}}
    with pytest.raises(ApiError):
        protobuf.decode_object(b"k8s\x00\x0a\xff")
