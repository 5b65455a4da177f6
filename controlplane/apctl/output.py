"""What apctl prints: kubectl-like tables, `-o json|yaml` documents, durations and ages."""
from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from typing import Any, Iterable

import yaml
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

FORMATS = ("table", "json", "yaml")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> datetime.timedelta:
    """`90s`, `30m`, `8h`, `1h30m`, `2d`, `500ms`: Go-like durations (argparse type)."""
    position, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 8h or 1h30m")
    return datetime.timedelta(seconds=seconds)


def duration_arg(text: str) -> datetime.timedelta:
    """parse_duration as an argparse `type`: a bad value is a usage error naming it."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def proto_duration(delta: datetime.timedelta) -> Duration:
    duration = Duration()
    duration.FromTimedelta(delta)
    return duration


def age(stamp: Timestamp, now: datetime.datetime | None = None) -> str:
    """kubectl's short age (`45s`, `12m`, `3h`, `2d`); `<none>` for an unset time."""
    if not stamp.seconds and not stamp.nanos:
        return "<none>"
    now = now or datetime.datetime.now(datetime.timezone.utc)
    seconds = max(0, int((now - stamp.ToDatetime(tzinfo=datetime.timezone.utc)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def timestamp_text(stamp: Timestamp) -> str:
    return stamp.ToJsonString() if stamp.seconds or stamp.nanos else "<none>"


def to_dict(message: Message, kind: str = "") -> dict[str, Any]:
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return {"kind": kind, **data} if kind else data


def print_document(data: Any, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def print_list(items: list[dict[str, Any]], fmt: str) -> None:
    print_document({"kind": "List", "items": items}, fmt)


def print_table(headers: list[str], rows: Iterable[list[Any]], what: str) -> None:
    """Columns padded to their widest cell, three spaces apart; an empty list says so on stderr."""
    cells = [[str(cell) for cell in row] for row in rows]
    if not cells:
        print(f"No {what} found.", file=sys.stderr)
        return
    widths = [max(len(row[i]) for row in [headers, *cells]) for i in range(len(headers))]
    for row in [headers, *cells]:
        sys.stdout.write("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")


def joined(values: Iterable[str]) -> str:
    return ",".join(values) or "<none>"


def labels_text(labels: dict[str, str]) -> str:
    return joined(f"{key}={value}" for key, value in sorted(labels.items()))
