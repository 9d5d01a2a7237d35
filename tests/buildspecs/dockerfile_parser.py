"""A small Dockerfile reader for assertions: instructions per stage, with continuations joined."""
from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    syntax: str | None
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise AssertionError(f"Dockerfile has no stage named {name!r}; stages: {[s.name for s in self.stages]}")

    @property
    def stage_names(self) -> set[str]:
        return {s.name for s in self.stages if s.name}


def parse_dockerfile(text: str) -> Dockerfile:
    syntax = None
    first = text.splitlines()[0] if text else ""
    match = re.match(r"#\s*syntax=(\S+)", first)
    if match:
        syntax = match.group(1)
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append((start, buffer + stripped))
        buffer = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            parts = args.split()
            parts = [p for p in parts if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=parts[0]))
        elif not stages:
            if keyword != "ARG":
                raise AssertionError(f"line {number}: only ARG may precede the first FROM, found {keyword}")
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return Dockerfile(syntax=syntax, global_args=global_args, stages=stages)
