"""The deployment files under ``infra/`` as data: YAML documents, the Dockerfile, pyproject.

Nothing here knows what the files should say; the tests compare what they do say with the code.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
DOCKERFILE = INFRA / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"  # the build context is the repository root
COMPOSE_FILE = INFRA / "compose.yaml"
K8S_DIR = INFRA / "k8s"
PROMETHEUS_DIR = INFRA / "prometheus"
GRAFANA_DIR = INFRA / "grafana"


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping, as compose and kubectl do;
    PyYAML alone keeps the last one, so a test would check a value nobody runs."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [
            self.construct_object(key, deep=deep)
            for key, _ in node.value
            if key.tag != "tag:yaml.org,2002:merge"  # overriding a merged key is the point
        ]
        repeated = {key for key in keys if keys.count(key) > 1}
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate keys {sorted(map(str, repeated))}", node.start_mark
            )
        return super().construct_mapping(node, deep)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=StrictLoader)


def load_yaml_documents(path: Path) -> list[Any]:
    """Every non-empty document of a (multi-document) YAML file."""
    text = path.read_text(encoding="utf-8")
    return [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc is not None]


def host_port(address: str) -> tuple[str, int]:
    """``("dispatcher", 50051)`` from ``"dispatcher:50051"``."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def port_of(address: str) -> int:
    return host_port(address)[1]


# --- Dockerfile ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the logical line, continuations joined
    stage: int  # index of the FROM it belongs to
    line: int  # first physical line, for messages

    def words(self) -> list[str]:
        """Arguments as a list: the JSON (exec) form if it is one, else shell words."""
        if self.args.startswith("["):
            return list(json.loads(self.args))
        return shlex.split(self.args)

    def options(self) -> tuple[dict[str, str], list[str]]:
        """``--from=build`` style options apart from the remaining words (COPY, ADD)."""
        opts: dict[str, str] = {}
        words = self.words()
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            opts[name] = value
        return opts, words


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Logical instructions in order; comments and blank lines dropped, as the builder does."""
    instructions: list[Instruction] = []
    pending, start, stage = "", 0, -1
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continuation: the builder skips comment lines there
        if not pending:
            start = number
        pending += stripped.removesuffix("\\").strip() + " "
        if stripped.endswith("\\"):
            continue
        keyword, _, args = pending.strip().partition(" ")
        keyword = keyword.upper()
        stage += keyword == "FROM"
        instructions.append(Instruction(keyword, args.strip(), stage, start))
        pending = ""
    assert not pending, f"{path}: the last instruction ends with a line continuation"
    return instructions


@dataclass(frozen=True)
class Image:
    """What the final stage of the Dockerfile sets up, as the running container sees it."""

    stages: dict[str, int]  # FROM ... AS name -> stage index
    bases: list[str]
    final: list[Instruction]
    env: dict[str, str]
    # container path -> source path in the build context, for COPY without --from
    files: dict[PurePosixPath, Path]
    copied_from_stages: list[tuple[str, str, str]]  # (stage, source, destination)
    exposed: set[int]
    user: str | None
    cmd: list[str] | None
    entrypoint: list[str] | None
    workdir: str | None


def _env_pairs(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}  # legacy ``ENV NAME value``
    return dict(word.split("=", 1) for word in words)


def _copy_targets(instruction: Instruction) -> dict[PurePosixPath, Path]:
    _, words = instruction.options()
    *sources, destination = words
    targets = {}
    for source in sources:
        dest = PurePosixPath(destination)
        if destination.endswith("/") or len(sources) > 1:
            dest = dest / PurePosixPath(source).name
        targets[dest] = REPO / source
    return targets


@cache
def image() -> Image:
    instructions = dockerfile_instructions()
    froms = [i for i in instructions if i.keyword == "FROM"]
    stages = {}
    for index, instruction in enumerate(froms):
        words = instruction.words()
        if len(words) == 3 and words[1].upper() == "AS":
            stages[words[2]] = index
    final = [i for i in instructions if i.stage == len(froms) - 1]
    env: dict[str, str] = {}
    files: dict[PurePosixPath, Path] = {}
    from_stages, exposed = [], set()
    facts: dict[str, Any] = {"USER": None, "CMD": None, "ENTRYPOINT": None, "WORKDIR": None}
    for instruction in final:
        if instruction.keyword == "ENV":
            env.update(_env_pairs(instruction.args))
        elif instruction.keyword == "COPY":
            opts, words = instruction.options()
            if "from" in opts:
                from_stages.append((opts["from"], words[0], words[-1]))
            else:
                files.update(_copy_targets(instruction))
        elif instruction.keyword == "EXPOSE":
            exposed |= {int(word.split("/")[0]) for word in instruction.words()}
        elif instruction.keyword in ("CMD", "ENTRYPOINT"):
            facts[instruction.keyword] = instruction.words()
        elif instruction.keyword in facts:
            facts[instruction.keyword] = instruction.args
    return Image(
        stages=stages,
        bases=[i.words()[0] for i in froms],
        final=final,
        env=env,
        files=files,
        copied_from_stages=from_stages,
        exposed=exposed,
        user=facts["USER"],
        cmd=facts["CMD"],
        entrypoint=facts["ENTRYPOINT"],
        workdir=facts["WORKDIR"],
    )


def image_uid() -> int:
    """The numeric uid of the final ``USER`` (``10001`` from ``USER 10001:10001``)."""
    user = image().user
    assert user is not None, "the Dockerfile sets no USER: containers would run as root"
    uid = user.partition(":")[0]
    assert uid.isdigit(), f"USER {user}: use a numeric uid so runAsNonRoot can verify it"
    return int(uid)


# --- .dockerignore ------------------------------------------------------------------------


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go filepath.Match plus ``**``) as a regex on a relative path."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


@cache
def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes?, pattern) in file order; a later ``!pattern`` re-includes."""
    if not DOCKERIGNORE.exists():
        return []
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        rules.append((not negated, _ignore_regex(pattern)))
    return rules


def dockerignored(relative: str) -> bool:
    """Whether the build context leaves out ``relative`` (or a directory above it)."""
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, regex in dockerignore_rules():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = excludes
    return excluded
