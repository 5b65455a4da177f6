"""The option machinery both configurations share (gateway and control plane).

A configuration is a dataclass whose fields are its options (types `str`, `int`, `float` or
`bool`, defaults as field defaults). `add_option_groups` turns them into argparse groups, one
`--name-with-dashes` flag each, mentioning the environment variable `<PREFIX><NAME>`;
`options_from_namespace` builds the configuration: flags win over environment variables, which
win over defaults, and every unparsable variable is reported at once in one `ConfigError`.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import fields
from typing import Callable, Mapping, Sequence, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """The configuration is unusable; the message lists every problem."""


def raise_problems(problems: list[str]) -> None:
    """One ConfigError listing every problem, if there are any."""
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def parse_flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _kind(type_name: object) -> Callable[[str], object]:
    return {"int": int, "float": float, "bool": parse_flag}.get(str(type_name), str)


def add_option_groups(parser: argparse.ArgumentParser, config_cls: type, groups: Mapping[str, Sequence[str]],
                      help: Mapping[str, str], env_prefix: str) -> None:
    defaults = config_cls()
    types = {f.name: f.type for f in fields(config_cls)}
    for title, names in groups.items():
        group = parser.add_argument_group(title)
        for name in names:
            env = env_prefix + name.upper()
            default = getattr(defaults, name)
            if str(types[name]) == "bool":
                group.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                                   action=argparse.BooleanOptionalAction,
                                   help=f"{help[name]} (env {env}=1|0; default {'on' if default else 'off'})")
                continue
            group.add_argument(
                "--" + name.replace("_", "-"), dest=name, type=_kind(types[name]), default=None,
                help=f"{help[name]} (env {env}; default {default!r})")


def options_from_namespace(config_cls: type[C], ns: argparse.Namespace, env_prefix: str,
                           environ: Mapping[str, str] | None = None) -> C:
    """Flags win over environment variables, which win over defaults."""
    environ = os.environ if environ is None else environ
    config = config_cls()
    problems: list[str] = []
    for f in fields(config_cls):
        value = getattr(ns, f.name, None)
        if value is None:
            raw = environ.get(env_prefix + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = _kind(f.type)
            try:
                value = kind(raw)
            except ValueError:
                what = "boolean" if kind is parse_flag else kind.__name__
                problems.append(f"{env_prefix}{f.name.upper()}: {raw!r} is not a valid {what}")
                continue
        setattr(config, f.name, value)
    raise_problems(problems)
    return config
