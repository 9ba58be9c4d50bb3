"""The code behind each result: every attempt records the git commit of its working directory (and
a dirty tree's diff, kept in the state folder) or its script's hash; status and report show it, and
the report warns when replicates ran different code."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from rota.engine.codever import CodeVersions, script_of
from rota.store.sqlite import SqliteStore
from tests.helpers import by_name, rota, write_spec

SPEC = """\
tasks:
  - name: t-{seed}
    matrix: {seed: [1, 2]}
    command: python train.py
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("print('ROTA_METRIC acc=1')\n")
    write_spec(repo, SPEC)
    (repo / ".gitignore").write_text(".rota/\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "init")
    return repo


def test_clean_and_dirty_git_trees_are_recorded_with_the_diff_kept(tmp_path: Path):
    repo = _repo(tmp_path)
    head = _git(repo, "rev-parse", "HEAD")
    rota("run", repo / "rota.yaml", "--plain", check=True)
    sd = repo / ".rota"
    tasks = by_name(sd)
    assert tasks["t-1"]["code"] == {"kind": "git", "repo": str(repo), "commit": head, "dirty": False,
                                    "diff_sha256": None}
    assert tasks["t-2"]["code"] == tasks["t-1"]["code"]
    assert not (sd / "code").exists()  # a clean tree keeps no diff

    with (repo / "train.py").open("a") as f:
        f.write("# tuned\n")
    rota("run", repo / "rota.yaml", "--plain", "--rerun", "t-2", check=True)
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=repo, check=True, capture_output=True).stdout
    digest = hashlib.sha256(diff).hexdigest()
    code = by_name(sd)["t-2"]["code"]
    assert code["commit"] == head and code["dirty"] is True and code["diff_sha256"] == digest
    assert (sd / code["diff_path"]).read_bytes() == diff and b"+# tuned" in diff
    # every attempt keeps its own record: t-2's first attempt ran the clean tree
    attempts = {a["attempt"]: a["code"] for a in SqliteStore(sd, readonly=True).attempts("t-2")}
    assert attempts[1]["dirty"] is False and attempts[2]["dirty"] is True

    # the report shows each task's code and warns that the replicates of t-{seed} differ
    rep = rota("report", repo / "rota.yaml", "--json", check=True)
    assert json.loads(rep.stdout)["code"]["t-2"]["diff_sha256"] == digest
    assert "warning: replicates of t-{seed} ran different code" in rep.stderr
    assert f"git:{head[:12]}: t-1" in rep.stderr and f"git:{head[:12]}+{digest[:12]}: t-2" in rep.stderr
    assert "different code" not in rota("report", repo / "rota.yaml", "--by", "seed", check=True).stderr


def test_without_git_the_script_hash_is_recorded(tmp_path: Path):
    folder = tmp_path / "plain"
    write_spec(folder, SPEC)
    (folder / "train.py").write_text("print('ROTA_METRIC acc=2')\n")
    rota("run", folder / "rota.yaml", "--plain", check=True, env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    code = by_name(folder / ".rota")["t-1"]["code"]
    want = hashlib.sha256((folder / "train.py").read_bytes()).hexdigest()
    assert code == {"kind": "script", "path": str(folder / "train.py"), "sha256": want}
    rep = rota("report", folder / "rota.yaml", check=True)
    assert "different code" not in rep.stderr  # both replicates ran the same script


def test_git_is_asked_once_per_folder(tmp_path: Path):
    """The cache: a second task in the same folder does not see a change made after the first
    launch (the run's record is taken once), a script outside git is hashed once too."""
    repo = _repo(tmp_path)
    cv = CodeVersions(str(tmp_path / "state"))
    first = cv.record(str(repo), "python train.py")
    (repo / "train.py").write_text("changed\n")
    assert cv.record(str(repo), "python train.py --seed 2") == first
    assert json.loads(CodeVersions(str(tmp_path / "state")).record(str(repo), "x") or "{}")["dirty"] is True

    assert script_of(str(repo), "python -u train.py --lr 0.1") == str(repo / "train.py")
    assert script_of(str(repo), "python -m pkg.train") is None
    assert script_of(str(repo), "echo missing.py") is None


def test_the_html_report_shows_each_groups_code_versions_and_warns(tmp_path: Path):
    """A real run in a repository, a commit, a rerun: the HTML report names both commits with the
    number of tasks each ran, and warns (at the top and in the group's results) that the replicates
    differ; a dirty tree is marked, and grouped by seed nothing warns."""
    repo = _repo(tmp_path)
    first = _git(repo, "rev-parse", "HEAD")
    rota("run", repo / "rota.yaml", "--plain", check=True)
    (repo / "train.py").write_text("print('ROTA_METRIC acc=2')\n")
    _git(repo, "commit", "-qam", "tuned")
    second = _git(repo, "rev-parse", "HEAD")
    rota("run", repo / "rota.yaml", "--plain", "--rerun", "t-2", check=True)

    html = tmp_path / "r.html"
    rep = rota("report", repo / "rota.yaml", "--html", html, check=True)
    warning = f"replicates of t-{{seed}} ran different code: git:{first[:12]}: t-1; git:{second[:12]}: t-2"
    assert warning in rep.stderr  # the text report's warning ...
    text = html.read_text()
    assert len(text.encode()) < 5_000_000
    top, rest = text.split("<nav>", 1)
    assert f"<div class=warn>&#9888; warning: {warning}</div>" in top  # ... the same, visibly, in the page
    results = rest.split("<h2 id=results>", 1)[1].split("<h2 id=timeline>", 1)[0]
    assert (f'<p class=note>code: <code title="{repo}">git {first[:12]}</code> (1 task), '
            f'<code title="{repo}">git {second[:12]}</code> (1 task)</p>') in results
    assert f"<div class=warn>&#9888; warning: {warning}</div>" in results
    tasks = rest.split("<h2 id=tasks>", 1)[1]
    assert f"<code>git:{first[:12]}</code>" in tasks and f"<code>git:{second[:12]}</code>" in tasks

    with (repo / "train.py").open("a") as f:
        f.write("# not committed\n")
    rota("run", repo / "rota.yaml", "--plain", "--rerun", "t-1", check=True)
    digest = by_name(repo / ".rota")["t-1"]["code"]["diff_sha256"]
    rep = rota("report", repo / "rota.yaml", "--by", "seed", "--html", html, check=True)
    text = html.read_text()
    assert "different code" not in rep.stderr and "<div class=warn>" not in text
    assert (f'<code title="code/{digest}.diff">git {second[:12]} <span class=dirty>dirty</span> '
            f"(diff {digest[:12]})</code> (1 task)") in text
