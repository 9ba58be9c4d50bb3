"""Every `rota` command written in the READMEs works as written.

The commands come from README.md, examples/README.md and examples/*/README.md:
the lines of their fenced shell blocks (``$ `` prompts, ``VAR=x`` prefixes,
``a && rota ...`` chains and ``# comments`` handled) and the inline code spans
of their tables and text that name an example's spec. Each runs against a copy
of examples/, from a folder laid out like the repository's root, as a user on a
2-CPU laptop would run it (the test pins itself to at most 2 CPUs: rota counts
the CPUs it may use from its affinity):

- ``rota run`` of a quickstart spec runs for real (the README's quickstart);
  then every ``rota status``/``report``/``logs``/``plan`` command of those
  specs runs for real and must exit 0.
- Any other ``rota run X FLAGS``: running every example would cost minutes, so
  its command line is parsed by ``rota run``'s own click command (a wrong or
  misspelt flag, a bad choice, a bad number fails), and ``rota plan X`` with
  the same ``--gpus``/``--cpus``/``--memory``/``--only`` must exit 0: plan
  exits 2 on a task that can never run with those resources, as run does.
  (``--backend slurm|ray`` books a cluster's CPUs, not this machine's: those
  are planned with ``--cpus 1024``.)
- ``rota plan`` commands run for real; ``rota status``/``report``/``logs`` of
  a spec that was not run must fail only for want of a state (exit 2, "no rota
  state"), not on a flag.
- A command on a spec of the reader's own (``rota run rota.yaml --only 'eval-*'``)
  is only parsed.
- ``pip install`` lines name only extras that pyproject.toml defines.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from tests.helpers import ROTA

ROOT = Path(__file__).resolve().parent.parent
READMES = [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted((ROOT / "examples").glob("*/README.md"))]
LAPTOP_CPUS = 2
CLUSTER_CPUS = "1024"
PLAN_FLAGS = ("--gpus", "--cpus", "--memory", "--only")  # what `rota plan` shares with `rota run`
QUICKSTART = "examples/quickstart/"
FENCE = re.compile(r"^```(\w*)\s*$")
INLINE = re.compile(r"`(rota [^`]+)`")
ENV_PREFIX = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")
PLACEHOLDER = re.compile(r"[\[\]|]|\.\.\.|\b(SPEC|TASK|PATTERN|ADDR|NAME|FILE|VAR|N|D)\b")


@dataclass(frozen=True)
class Command:
    where: str  # "README.md:32"
    argv: tuple[str, ...]  # the rota arguments, without "rota"
    env: tuple[tuple[str, str], ...] = ()

    @property
    def spec(self) -> str | None:
        return next((a for a in self.argv[1:] if a.endswith((".yaml", ".yml"))), None)

    def __str__(self) -> str:
        return f"{self.where}: rota {shlex.join(self.argv)}"


def _split_chain(line: str) -> list[list[str]]:
    """``a && b; c`` -> the words of each simple command (comments dropped)."""
    words = shlex.split(line, comments=True)
    out: list[list[str]] = [[]]
    for w in words:
        if w in ("&&", "||", ";", "&"):
            out.append([])
        else:
            out[-1].append(w)
    return [c for c in out if c]


def _shell_commands(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, words) of every command line in the file's shell-like fenced blocks."""
    out: list[tuple[int, list[str]]] = []
    lang: str | None = None
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = FENCE.match(raw.strip())
        if m:
            lang = None if lang is not None else m.group(1)
            continue
        if lang is None or lang not in ("", "bash", "sh", "shell", "console"):
            continue
        line = raw.strip()
        if lang == "" and not line.startswith("$ "):
            continue  # an output block: only its prompt lines are commands
        line = line.removeprefix("$ ")
        if line:
            out.extend((n, words) for words in _split_chain(line))
    return out


def _rota(where: str, words: list[str]) -> Command | None:
    env: list[tuple[str, str]] = []
    while words and ENV_PREFIX.match(words[0]):
        k, v = words[0].split("=", 1)
        env.append((k, v))
        words = words[1:]
    if not words or words[0] != "rota" or len(words) < 2:
        return None
    return Command(where, tuple(words[1:]), tuple(env))


def readme_commands() -> list[Command]:
    """Every rota command of the READMEs, in file order, duplicates dropped."""
    found: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], Command] = {}
    for path in READMES:
        rel = path.relative_to(ROOT).as_posix()
        for n, words in _shell_commands(path):
            c = _rota(f"{rel}:{n}", words)
            if c is not None:
                found.setdefault((c.argv, c.env), c)
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for span in INLINE.findall(line):
                if PLACEHOLDER.search(span.replace("--", "")) or "examples/" not in span:
                    continue  # a syntax line (`rota logs TASK [SPEC]`) or a mention (`rota plan --only`)
                c = _rota(f"{rel}:{n}", shlex.split(span))
                if c is not None:
                    found.setdefault((c.argv, c.env), c)
    return list(found.values())


COMMANDS = readme_commands()


def _laptop() -> None:
    """In the child: at most LAPTOP_CPUS usable CPUs, as on a small laptop."""
    cpus = sorted(os.sched_getaffinity(0))[:LAPTOP_CPUS]
    os.sched_setaffinity(0, cpus)


def run_rota(argv: tuple[str, ...] | list[str], cwd: Path, env: tuple[tuple[str, str], ...] = (),
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ROTA, *argv], cwd=cwd, env={**os.environ, **dict(env)}, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=_laptop)


def _plan_argv(c: Command) -> list[str]:
    """``rota plan SPEC`` with the run's resource flags (and its --only)."""
    argv = ["plan", str(c.spec)]
    args = list(c.argv[1:])
    for k, a in enumerate(args):
        name, _, inline = a.partition("=")
        if name in PLAN_FLAGS:
            argv += [name, inline or args[k + 1]]
    backend = next((args[k + 1] for k, a in enumerate(args[:-1]) if a == "--backend"), "local")
    if backend != "local" and "--cpus" not in argv:
        argv += ["--cpus", CLUSTER_CPUS]
    return argv


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like the repository's root, with a fresh copy of examples/, in which the
    quickstart commands of the READMEs have run for real."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", root / "examples",
                    ignore=shutil.ignore_patterns(".rota", "data", "__pycache__"))
    runs = [c for c in COMMANDS if c.argv[0] == "run" and (c.spec or "").startswith(QUICKSTART)]
    assert runs, "the README's quickstart command was not found"
    for c in runs:
        p = run_rota([*c.argv, "--plain"], root, c.env)
        assert p.returncode == 0, f"{c} -> exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-2000:]}"
    return root


def test_the_readmes_hold_the_commands_this_test_checks() -> None:
    """The extraction finds what the READMEs show: the quickstart, a run of every example, plans."""
    argvs = {shlex.join(c.argv) for c in COMMANDS}
    assert "run examples/quickstart/rota.yaml" in argvs
    assert "run examples/quickstart/gpus.yaml --gpus 2x24GB --cpus 8" in argvs
    for example in ("recsys-pipeline", "weekly-training", "embed-shards", "hpo-gbdt", "experiment-suite"):
        assert any(c.argv[0] == "run" and c.spec == f"examples/{example}/rota.yaml" for c in COMMANDS), example
    assert any(c.argv[0] == "plan" for c in COMMANDS)
    assert any(c.env for c in COMMANDS)  # ROTA_EXAMPLE_FAIL_RATE=0.2 rota run ...


@pytest.mark.parametrize("c", COMMANDS, ids=str)
def test_readme_command_works(c: Command, repo: Path) -> None:
    from rota.cli.main import cli

    cmd = cli.commands.get(c.argv[0])
    assert cmd is not None, f"{c}: rota has no command {c.argv[0]!r}"
    try:  # the command line as rota's own click command parses it (flags, choices, numbers)
        cmd.make_context(c.argv[0], list(c.argv[1:]))
    except click.ClickException as e:
        pytest.fail(f"{c}: {e.format_message()}")
    if c.spec is None or not c.spec.startswith("examples/"):
        return  # a command on a spec of the reader's own: parsed only
    if c.spec is not None:
        assert (repo / c.spec).is_file(), f"{c}: no file {c.spec}"
    if c.argv[0] == "run":
        if (c.spec or "").startswith(QUICKSTART):
            return  # ran for real in the fixture
        p = run_rota(_plan_argv(c), repo, c.env)
        assert p.returncode == 0, f"{c}\n(checked as: rota {shlex.join(_plan_argv(c))}) -> exit {p.returncode}\n{p.stderr}"
        return
    if c.argv[0] == "stop":
        p = run_rota(c.argv, repo, c.env)
        assert p.returncode == 1 and "no rota controller is running" in p.stderr, f"{c}\n{p.stderr}"
        return
    p = run_rota(c.argv, repo, c.env)
    ran = c.spec is None or c.spec.startswith(QUICKSTART) or c.argv[0] in ("plan", "machine")
    if ran:
        assert p.returncode == 0, f"{c} -> exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr}"
    else:  # a spec this test did not run: only the missing state may stop it
        assert p.returncode == 2 and "no rota state" in p.stderr, f"{c} -> exit {p.returncode}\n{p.stderr}"


def test_plan_refuses_a_run_that_can_never_fit_this_laptop(repo: Path) -> None:
    """The check above has teeth: the command the README once showed for weekly-training
    (no --cpus, while its features task books 16 CPUs) fails plan with exit 2 and the fix."""
    p = run_rota(["plan", "examples/weekly-training/rota.yaml", "--gpus", "2x80GB"], repo)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr
    assert "can never run here" in p.stderr and "--cpus 16" in p.stderr, p.stderr


def test_pip_install_lines_name_existing_extras() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    seen = 0
    for path in READMES:
        for n, words in _shell_commands(path):
            if words[:2] != ["pip", "install"]:
                continue
            for w in words[2:]:
                m = re.fullmatch(r"(?:\.|rota)\[([\w,-]+)\]", w)
                if m:
                    seen += 1
                    missing = set(m.group(1).split(",")) - extras
                    assert not missing, f"{path.relative_to(ROOT)}:{n}: no extra {missing} in pyproject.toml"
    assert seen, "no pip install line with extras found"


def test_examples_install_takes_the_cpu_torch_first() -> None:
    """The `examples` extra needs torch; without a CPU build installed first, pip fetches the
    multi-GB CUDA build. Every README line that installs the extra follows the CPU line."""
    seen = 0
    for path in READMES:
        torch_cpu_at = -1
        for n, words in _shell_commands(path):
            if words[:3] == ["pip", "install", "torch"] and "https://download.pytorch.org/whl/cpu" in words:
                torch_cpu_at = n
            if words[:2] == ["pip", "install"] and any(re.fullmatch(r"(\.|rota)\[[\w,-]*examples[\w,-]*\]", w)
                                                      for w in words[2:]):
                seen += 1
                assert 0 <= n - torch_cpu_at <= 2, f"{path.relative_to(ROOT)}:{n}: no CPU torch line just before"
    assert seen >= 4  # the README, examples/README.md and the examples that need torch


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^#{1,6} (.+)$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def test_links_between_readmes_and_docs_resolve() -> None:
    """The README points at docs/ for the details it leaves out: every relative link (and its
    #anchor) in the READMEs and docs/*.md reaches a file and a heading that exist."""
    checked = 0
    for path in [*READMES, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)} -> {target}"
            assert dest.exists(), f"{where}: no such file"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest), f"{where}: no heading with that anchor"
            checked += 1
    assert checked > 10
