"""Label and field selectors (the string forms of `?labelSelector=` and `?fieldSelector=`)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from .status import bad_request

_LABEL_TERM = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[^\s!=,()]+)"
    r"|(?P<key>[^\s!=,()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*$")

Matcher = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str                 # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values      # "!=", "notin"


def _split_top_level(text: str) -> list[str]:
    """Splits on commas that are not inside `in (...)` value lists."""
    terms, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return [t for t in terms if t.strip()]


def parse_label_selector(text: str) -> list[Requirement]:
    requirements = []
    for term in _split_top_level(text):
        m = _LABEL_TERM.match(term)
        if not m:
            raise bad_request(f'unable to parse requirement: found "{term.strip()}", expected: label selector')
        if m["nkey"]:
            requirements.append(Requirement(m["nkey"], "!"))
        elif m["op"]:
            op = "!=" if m["op"] == "!=" else "="
            requirements.append(Requirement(m["key"], op, (m["value"],)))
        elif m["setop"]:
            values = tuple(v.strip() for v in m["values"].split(",") if v.strip())
            requirements.append(Requirement(m["key"], m["setop"], values))
        else:
            requirements.append(Requirement(m["key"], "exists"))
    return requirements


def parse_field_selector(text: str) -> list[tuple[str, bool, str]]:
    """[(field, equal, value)]; `==` and `=` mean equal, `!=` not equal."""
    terms = []
    for term in _split_top_level(text):
        if "!=" in term:
            key, _, value = term.partition("!=")
            terms.append((key.strip(), False, value.strip()))
        elif "=" in term:
            key, _, value = term.partition("=")
            terms.append((key.strip(), True, value.strip().removeprefix("=")))
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
    return terms


def field_value(obj: dict[str, Any], dotted: str) -> str:
    """A field's value as the API server's field-label conversion renders it ("" when unset)."""
    node: Any = obj
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, dict):       # Event.source is rendered as its component
        return str(node.get("component", ""))
    return str(node)


def field_name_exact(text: str, name: str) -> str | None:
    """The value an `x=` / `x==` term of a field selector requires for field `name`, if any."""
    for key, equal, value in parse_field_selector(text):
        if key == name and equal:
            return value
    return None


def compile_selectors(label_selector: str, field_selector: str, allowed_fields: tuple[str, ...]) -> Matcher:
    labels = parse_label_selector(label_selector) if label_selector else []
    fields = parse_field_selector(field_selector) if field_selector else []
    for key, _, _ in fields:
        if key not in ("metadata.name", "metadata.namespace") and key not in allowed_fields:
            raise bad_request(f"field label not supported: {key}")

    def matches(obj: dict[str, Any]) -> bool:
        obj_labels = (obj.get("metadata") or {}).get("labels") or {}
        if not all(req.matches(obj_labels) for req in labels):
            return False
        return all((field_value(obj, key) == value) == equal for key, equal, value in fields)

    return matches
