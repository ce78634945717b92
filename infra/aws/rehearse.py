"""Rehearse a Dockerfile of ours without a Docker engine: run its steps into a directory.

The development and CI machines have no Docker daemon and no registry to pull base images from,
so the images `serverless deploy` and `make aws-deploy` build were never built here. This runs
what our two Dockerfiles do, step by step, on this machine's Python 3.13 (the bases' version):

- FROM: only bases whose facts are known below (Python version, glibc, paths, what they ship);
  the platform must be linux/amd64. Wheels are chosen for that base (``--platform``,
  ``--python-version``, ``--implementation``, ``--only-binary=:all:``: slim images have no
  compiler), so a wheel the real build could not install fails here too.
- COPY: from the build context through the Dockerfile's own ignore file, so a source the ignore
  file hides is missing here as it would be in the real build.
- RUN: ``pip install``, ``rm -rf``, ``chmod`` and ``python -c``; anything else is refused, so a
  step cannot pass here by being skipped. ``python -c`` runs in isolation (no site, no venv)
  with the image's paths only.
- CMD: a Lambda handler must import and be callable; a command must be an executable file.

Container paths land under the output directory (``/var/task`` → ``OUT/var/task``).

    python infra/aws/rehearse.py infra/aws/scoring.Dockerfile OUT [--context .] [--resolve-only]

It prints one JSON object: the directories made and the bytes of the files the steps wrote
(the base's own packages, linked from this machine, not counted). Exit status 1
and the failing step on stderr when a step fails.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Base:
    """What a base image is known to hold: the facts a rehearsal needs and cannot pull."""

    python: str
    glibc: tuple[int, int]
    workdir: str
    site: str  # where `pip install` without --target puts packages
    env: dict[str, str] = field(default_factory=dict)
    ships: tuple[str, ...] = ()  # importable packages the base provides (in site)
    lambda_handler: bool = False  # CMD names a handler, not a program


BASES = {
    # AWS Lambda python3.13: Amazon Linux 2023 (glibc 2.34), boto3 in the runtime's site.
    "public.ecr.aws/lambda/python:3.13": Base(
        python="3.13",
        glibc=(2, 34),
        workdir="/var/task",
        site="/var/lang/lib/python3.13/site-packages",
        env={"LAMBDA_TASK_ROOT": "/var/task", "LAMBDA_RUNTIME_DIR": "/var/runtime"},
        ships=("boto3", "botocore", "s3transfer", "urllib3", "dateutil", "six", "jmespath"),
        lambda_handler=True,
    ),
    # python:3.13-slim is Debian (glibc 2.36 or newer): 2.36 is the floor a wheel may need.
    "python:3.13-slim": Base(
        python="3.13",
        glibc=(2, 36),
        workdir="/",
        site="/usr/local/lib/python3.13/site-packages",
    ),
}


class RehearsalError(Exception):
    """A step the real build would fail on, or one this rehearsal cannot run."""


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    steps: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        steps.append((word.upper(), rest.strip()))
    if pending:
        raise RehearsalError("the Dockerfile ends inside a continued line")
    return steps


class Ignore:
    """A .dockerignore: the last matching pattern wins, `!` re-includes, `**` spans folders,
    and a pattern that matches a folder matches everything under it."""

    def __init__(self, path: Path | None) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        lines = path.read_text().splitlines() if path is not None and path.exists() else []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = str(PurePosixPath(line.lstrip("!").strip().lstrip("/")))
            self.rules.append((negate, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            if part in ("**", "**/"):
                out += ".*"
            elif part == "*":
                out += "[^/]*"
            elif part == "?":
                out += "[^/]"
            else:
                out += re.escape(part)
        return out + "$"

    def excluded(self, relative: str) -> bool:
        parts = relative.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = False
        for negate, rule in self.rules:
            if any(rule.match(candidate) for candidate in candidates):
                verdict = not negate
        return verdict


class Rehearsal:
    def __init__(self, dockerfile: Path, context: Path, out: Path, resolve_only: bool) -> None:
        self.dockerfile = dockerfile
        self.context = context.resolve()
        self.out = out.resolve()
        self.resolve_only = resolve_only
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
        self.ignore = Ignore(ignore if ignore.exists() else self.context / ".dockerignore")
        self.base: Base | None = None
        self.env: dict[str, str] = {}
        self.workdir = "/"
        self.skipped: list[str] = []
        self.cmd: list[str] = []

    # ---- paths
    def expand(self, text: str) -> str:
        return re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda m: self.env.get(m.group(1) or m.group(2), ""),
            text,
        )

    def host(self, container_path: str) -> Path:
        """Where a container path lands in the rehearsal; relative paths start at WORKDIR."""
        path = PurePosixPath(self.workdir) / self.expand(container_path)
        mapped = (self.out / str(path).lstrip("/")).resolve()
        if mapped != self.out and self.out not in mapped.parents:
            raise RehearsalError(f"{container_path} leaves the image's file system")
        return mapped

    # ---- instructions
    def run(self) -> dict[str, object]:
        self.out.mkdir(parents=True, exist_ok=True)
        for word, rest in instructions(self.dockerfile):
            handler = getattr(self, f"do_{word.lower()}", None)
            if handler is None:
                raise RehearsalError(f"{word} is not an instruction this rehearsal runs")
            if word != "FROM" and self.base is None:
                raise RehearsalError(f"{word} before FROM")
            handler(rest)
        if self.base is None:
            raise RehearsalError("no FROM")
        self.check_cmd()
        files = [p for p in self.out.rglob("*") if p.is_file() and not p.is_symlink()]
        return {
            "dockerfile": str(self.dockerfile),
            "root": str(self.out),
            "workdir": str(self.host(self.workdir)),
            "site": str(self.host(self.base.site)),
            "task_root": str(self.host(self.env["LAMBDA_TASK_ROOT"]))
            if "LAMBDA_TASK_ROOT" in self.env
            else None,
            "bytes": sum(p.stat().st_size for p in files),
            "cmd": self.cmd,
            "skipped": self.skipped,
        }

    def do_from(self, rest: str) -> None:
        words = rest.split()
        platform = next((w.split("=", 1)[1] for w in words if w.startswith("--platform=")), None)
        image = next(w for w in words if not w.startswith("--"))
        if platform != "linux/amd64":
            raise RehearsalError(f"FROM {image} is not pinned to --platform=linux/amd64")
        if image not in BASES:
            raise RehearsalError(f"base image {image} is unknown to the rehearsal: add its facts")
        base = BASES[image]
        if f"{sys.version_info.major}.{sys.version_info.minor}" != base.python:
            raise RehearsalError(f"{image} runs Python {base.python}; this is {sys.version}")
        self.base = base
        self.env.update(base.env)
        self.workdir = base.workdir
        self.host(self.workdir).mkdir(parents=True, exist_ok=True)
        site = self.host(base.site)
        site.mkdir(parents=True, exist_ok=True)
        for name in base.ships:  # the base's own packages, linked from this interpreter
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                raise RehearsalError(f"{image} ships {name}; this machine has none to link")
            origin = Path(spec.origin)
            source = origin.parent if origin.name == "__init__.py" else origin
            link = site / source.name
            if not link.exists():
                link.symlink_to(source)

    def do_env(self, rest: str) -> None:
        for pair in shlex.split(rest):
            key, _, value = pair.partition("=")
            self.env[key] = self.expand(value)

    def do_workdir(self, rest: str) -> None:
        self.workdir = str(PurePosixPath(self.workdir) / self.expand(rest))
        self.host(self.workdir).mkdir(parents=True, exist_ok=True)

    def do_label(self, rest: str) -> None:
        del rest

    def do_copy(self, rest: str) -> None:
        words = shlex.split(rest)
        if any(w.startswith("--") for w in words):
            raise RehearsalError(f"COPY flags are not rehearsed: {rest}")
        *sources, dest = words
        target = self.host(dest)
        into_folder = dest.endswith("/") or len(sources) > 1
        for source in sources:
            matches = (
                sorted(glob.glob(source, root_dir=self.context))
                if glob.has_magic(source)
                else [source]
            )
            found = [m for m in matches if (self.context / m).exists()]
            files = [
                (m, f) for m in found for f in self._context_files(m) if not self.ignore.excluded(f)
            ]
            if not files:
                raise RehearsalError(f"COPY {source}: nothing in the build context (ignore file?)")
            for match, relative in files:
                if (self.context / match).is_dir():
                    inner = relative[len(match.rstrip("/")) + 1 :]
                    destination = target / inner
                elif into_folder or glob.has_magic(source):
                    destination = target / Path(relative).name
                else:
                    destination = target
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.context / relative, destination)

    def _context_files(self, match: str) -> list[str]:
        path = self.context / match
        if path.is_file():
            return [match]
        return sorted(str(p.relative_to(self.context)) for p in path.rglob("*") if p.is_file())

    def do_run(self, rest: str) -> None:
        for command in re.split(r"\s*&&\s*", rest):
            words = [self.expand(w) for w in shlex.split(command)]
            if words[:2] == ["pip", "install"]:
                self.pip_install(words[2:])
            elif words[:2] == ["rm", "-rf"]:
                for path in words[2:]:
                    target = self.host(path)
                    if target.is_dir():
                        shutil.rmtree(target)
                    else:
                        target.unlink(missing_ok=True)
            elif words[0] == "chmod" and len(words) == 3:
                os.chmod(self.host(words[2]), int(words[1], 8))
            elif words[:2] == ["python", "-c"] and len(words) == 3:
                if self.resolve_only:
                    self.skipped.append(command)
                else:
                    self.python(words[2])
            else:
                raise RehearsalError(f"RUN step not rehearsed: {command}")

    def pip_install(self, args: list[str]) -> None:
        assert self.base is not None
        mapped: list[str] = []
        has_target = False
        for i, arg in enumerate(args):
            if arg == "--no-cache-dir":
                continue  # the rehearsal may use the cache: the result is the same
            is_path = arg.startswith("/") or (i > 0 and args[i - 1] in ("--target", "-r"))
            has_target = has_target or arg == "--target"
            mapped.append(str(self.host(arg)) if is_path else arg)
        if not has_target:
            mapped += ["--target", str(self.host(self.base.site))]
        minor = self.base.glibc[1]  # every manylinux tag up to the base's glibc
        platforms = [f"manylinux_2_{m}_x86_64" for m in range(minor, 16, -1)]
        platforms += ["manylinux2014_x86_64"]
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        command += [f"--platform={p}" for p in platforms]
        command += [f"--python-version={self.base.python}", "--implementation=cp"]
        command += ["--only-binary=:all:", *mapped]
        if self.resolve_only:
            report = self.out / f"pip-report-{len(self.skipped)}.json"
            command += ["--dry-run", "--ignore-installed", "--report", str(report)]
        done = subprocess.run(
            command, cwd=self.host(self.workdir), capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise RehearsalError(f"pip install {' '.join(args)} failed:\n{done.stderr[-3000:]}")

    def python(self, code: str, cwd: Path | None = None) -> None:
        """`python -c` as the image runs it: its WORKDIR first on the path, then its site."""
        assert self.base is not None
        prelude = f"import sys; sys.path.append({str(self.host(self.base.site))!r})\n"
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.out)}
        env.update({k: str(self.host(v)) if v.startswith("/") else v for k, v in self.env.items()})
        done = subprocess.run(
            [sys.executable, "-S", "-s", "-E", "-c", prelude + code],
            cwd=cwd or self.host(self.workdir),
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise RehearsalError(f"python -c {code!r} failed:\n{done.stderr[-3000:]}")

    def do_cmd(self, rest: str) -> None:
        value = json.loads(rest)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RehearsalError("CMD must be the exec form: a JSON list of strings")
        self.cmd = value

    def check_cmd(self) -> None:
        assert self.base is not None
        if not self.cmd:
            raise RehearsalError("no CMD")
        if self.base.lambda_handler:
            module, _, name = self.cmd[0].rpartition(".")
            code = f"import {module} as m; assert callable(m.{name}), {self.cmd[0]!r}"
            if self.resolve_only:
                self.skipped.append(f"CMD {self.cmd[0]}")
            else:
                self.python(code, cwd=self.host(self.env["LAMBDA_TASK_ROOT"]))
            return
        program = self.cmd[0]
        folders = ["/usr/local/bin", "/usr/bin", "/bin"] if "/" not in program else [""]
        for folder in folders:
            path = self.host(f"{folder}/{program}" if folder else program)
            if path.is_file() and os.access(path, os.X_OK):
                return
        if not any(fnmatch.fnmatch(program, p) for p in ("python*", "sh", "bash")):
            raise RehearsalError(f"CMD {program} is not an executable file in the image")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rehearse.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("dockerfile", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--context", type=Path, default=Path("."))
    parser.add_argument(
        "--resolve-only",
        action="store_true",
        help="pip resolves wheels for the base but installs nothing; python -c steps are skipped",
    )
    args = parser.parse_args(argv)
    try:
        summary = Rehearsal(args.dockerfile, args.context, args.out, args.resolve_only).run()
    except RehearsalError as error:
        print(f"rehearse {args.dockerfile}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
