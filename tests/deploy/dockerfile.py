"""A small Dockerfile reader: enough to run the image's command outside Docker.

It understands what our Dockerfile uses: line continuations, comments, ``ARG``, ``FROM ... AS``
(a stage inherits the ENV of a named parent stage), ``ENV`` in ``key=value`` form with
``$VAR``/``${VAR}`` expansion, and exec-form (JSON) ``CMD``/``HEALTHCHECK CMD``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass
class Stage:
    name: str | None
    base: str
    env: dict[str, str] = field(default_factory=dict)
    cmd: list[str] | None = None
    healthcheck: list[str] | None = None
    expose: list[str] = field(default_factory=list)
    user: str | None = None
    runs: list[str] = field(default_factory=list)


@dataclass
class Dockerfile:
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def all_env_keys(self) -> set[str]:
        return {key for stage in self.stages for key in stage.env}


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
        current = ""
    return result


def expand(value: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def parse(path: Path) -> Dockerfile:
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for word, rest in instructions(path.read_text()):
        if word == "ARG" and not stages:
            key, _, default = rest.partition("=")
            global_args[key] = default
        elif word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            base = expand(parts[0], global_args)
            parent = next((s for s in stages if s.name == base), None)
            stage = Stage(name=name, base=base, env=dict(parent.env) if parent else {})
            stages.append(stage)
        elif word == "ENV":
            stage = stages[-1]
            for item in shlex.split(rest):
                key, sep, value = item.partition("=")
                assert sep, f"ENV {item!r}: use the key=value form"
                stage.env[key] = expand(value, {**global_args, **stage.env})
        elif word == "CMD":
            stages[-1].cmd = _exec_form(rest, "CMD")
        elif word == "HEALTHCHECK":
            _, _, command = rest.partition("CMD ")
            stages[-1].healthcheck = _exec_form(command.strip(), "HEALTHCHECK CMD")
        elif word == "EXPOSE":
            stages[-1].expose.extend(rest.split())
        elif word == "USER":
            stages[-1].user = rest
        elif word == "RUN":
            stages[-1].runs.append(rest)
    return Dockerfile(stages)


def _exec_form(text: str, what: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"{what} must be in exec form (a JSON list): {text!r}") from exc
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return [str(v) for v in value]
