"""rota.shard: shard ranges, checkpointed chunk loops, progress file, merge checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rota.shard as shard
from rota.errors import RotaError
from rota.shard import MergeError, ShardError
from tests.helpers import wait_for


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ROTA_SHARD_INDEX", "ROTA_SHARD_COUNT", "ROTA_OUT", "ROTA_NEEDS_OUT", "ROTA_COMMAND"):
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------------- ranges


@given(n_items=st.integers(0, 100_000), n=st.integers(1, 300))
@settings(max_examples=300, deadline=None)
def test_ranges_cover_every_item_exactly_once(n_items: int, n: int) -> None:
    ranges = [shard.range(n_items, i, n) for i in range(n)]
    assert ranges[0].start == 0 and ranges[-1].stop == n_items
    for a, b in zip(ranges, ranges[1:], strict=False):
        assert a.stop == b.start  # contiguous, in order, disjoint
    sizes = [len(r) for r in ranges]
    assert sum(sizes) == n_items
    assert max(sizes) - min(sizes) <= 1
    assert all(r.step == 1 for r in ranges)


@given(n_items=st.integers(0, 2000), n=st.integers(1, 40))
@settings(max_examples=100, deadline=None)
def test_ranges_as_sets_partition_items(n_items: int, n: int) -> None:
    seen: list[int] = []
    for i in range(n):
        seen.extend(shard.range(n_items, i, n))
    assert seen == list(range(n_items))


def test_index_count_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (shard.index(), shard.count()) == (0, 1)
    monkeypatch.setenv("ROTA_SHARD_INDEX", "2")
    monkeypatch.setenv("ROTA_SHARD_COUNT", "4")
    assert (shard.index(), shard.count()) == (2, 4)
    assert shard.range(10) == range(6, 8)  # sizes 3, 3, 2, 2
    monkeypatch.setenv("ROTA_SHARD_INDEX", "4")
    with pytest.raises(ShardError, match="outside"):
        shard.index()
    monkeypatch.setenv("ROTA_SHARD_COUNT", "x")
    with pytest.raises(ShardError, match="not an integer"):
        shard.count()


def test_range_rejects_bad_arguments() -> None:
    with pytest.raises(ShardError):
        shard.range(-1, 0, 1)
    with pytest.raises(ShardError):
        shard.range(10, 3, 3)
    with pytest.raises(ShardError):
        shard.range(10, 0, 0)
    assert issubclass(MergeError, RotaError) and issubclass(ShardError, RotaError)


# ---------------------------------------------------------------------- chunks


def test_chunks_process_all_then_skip_finished(tmp_path: Path) -> None:
    seen = []
    for c in shard.chunks(range(100, 350), 64, out_dir=tmp_path):
        seen.append((c.start, c.stop))
        assert c.items == range(c.start, c.stop)
        c.save(np.arange(c.start, c.stop, dtype=np.float32)[:, None])
    assert seen == [(100, 164), (164, 228), (228, 292), (292, 350)]
    assert list(shard.chunks(range(100, 350), 64, out_dir=tmp_path)) == []
    prog = json.loads((tmp_path / ".rota" / "progress.json").read_text())
    assert prog["done"] == prog["total"] == 250
    assert prog["unit"] == "items" and prog["eta_s"] == 0.0
    assert isinstance(prog["items_per_s"], float) and isinstance(prog["updated_at"], float)


def test_chunks_resume_after_partial_run(tmp_path: Path) -> None:
    loop = shard.chunks(10, 3, out_dir=tmp_path)
    for c in loop:
        c.save([i * 2 for i in c.items])
        if c.index == 1:
            break
    loop.close()
    prog = json.loads((tmp_path / ".rota" / "progress.json").read_text())
    assert (prog["done"], prog["total"]) == (6, 10)
    rest = [(c.start, c.stop) for c in shard.chunks(10, 3, out_dir=tmp_path) if c.mark_done()]
    assert rest == [(6, 9), (9, 10)]
    kinds = sorted(p.suffix for _, _, p in shard.saved_chunks(tmp_path))
    assert kinds == [".done", ".done", ".json", ".json"]


def test_chunks_over_a_sequence_and_pickle(tmp_path: Path) -> None:
    words = [f"w{i}" for i in range(7)]
    got = []
    for c in shard.chunks(words, 3, out_dir=tmp_path, name="words"):
        got.append(c.items)
        c.save({"set": set(c.items)})  # not JSON -> pickle
    assert got == [["w0", "w1", "w2"], ["w3", "w4", "w5"], ["w6"]]
    assert {p.suffix for _, _, p in shard.saved_chunks(tmp_path, "words")} == {".pkl"}


def test_save_kinds(tmp_path: Path) -> None:
    loop = shard.chunks(4, 1, out_dir=tmp_path, name="kinds")
    values = [np.arange(3.0), np.lib.format.open_memmap(str(tmp_path / "m.npy"), mode="w+", dtype="f4", shape=(2,)),
              {"a": 1}, {1, 2}]
    suffixes = []
    for c, value in zip(loop, values, strict=True):
        suffixes.append(c.save(value).suffix)
    assert suffixes == [".npy", ".npy", ".json", ".pkl"]
    torch = pytest.importorskip("torch")
    c = next(iter(shard.chunks(1, 1, out_dir=tmp_path, name="torch")))
    path = c.save(torch.ones(2, 3, requires_grad=True) * 2)
    assert path.suffix == ".npy" and np.array_equal(np.load(path), np.full((2, 3), 2.0, dtype=np.float32))


def test_unsaved_chunk_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="was not saved"):
        for _c in shard.chunks(10, 5, out_dir=tmp_path):
            pass


def test_changed_chunk_size_is_refused(tmp_path: Path) -> None:
    for c in shard.chunks(10, 5, out_dir=tmp_path):
        c.mark_done()
        break
    with pytest.raises(ShardError, match="chunk_size=5"):
        shard.chunks(10, 4, out_dir=tmp_path)  # raised at the call, before any iteration
    with pytest.raises(ShardError, match="positive int"):
        shard.chunks(10, 0, out_dir=tmp_path)


def test_chunks_of_another_command_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTA_COMMAND", "python embed.py --model old")
    for c in shard.chunks(10, 5, out_dir=tmp_path):
        c.save([1.0])
        break
    assert next(iter(shard.chunks(10, 5, out_dir=tmp_path))).start == 5  # the same command resumes
    monkeypatch.setenv("ROTA_COMMAND", "python embed.py --model new")
    # Before: the new command skipped the chunk the old one wrote and the merge mixed them.
    with pytest.raises(ShardError, match="made by 'python embed.py --model old'.*--model new"):
        shard.chunks(10, 5, out_dir=tmp_path)
    monkeypatch.delenv("ROTA_COMMAND")
    with pytest.raises(ShardError, match="made by 'python embed.py --model old'"):
        shard.chunks(10, 5, out_dir=tmp_path)  # by hand: this process's command line is another command


def test_chunks_default_to_rota_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTA_OUT", str(tmp_path))
    monkeypatch.setenv("ROTA_SHARD_INDEX", "1")
    monkeypatch.setenv("ROTA_SHARD_COUNT", "2")
    for c in shard.chunks(shard.range(10), 2):
        c.save(np.zeros((len(c), 3)))
    assert [(s, e) for s, e, _ in shard.saved_chunks()] == [(5, 7), (7, 9), (9, 10)]
    prog = json.loads((tmp_path / ".rota" / "progress.json").read_text())
    assert prog["shard"] == 1 and prog["count"] == 2 and prog["chunks_done"] == 3


def test_progress_without_chunks(tmp_path: Path) -> None:
    rec = shard.progress(0, 100, out_dir=tmp_path)
    assert rec["eta_s"] is None and rec["items_per_s"] == 0.0
    time.sleep(0.05)
    assert shard.progress(10, 100, out_dir=tmp_path) is None  # throttled
    rec = shard.progress(50, 100, out_dir=tmp_path, min_interval_s=0)
    assert rec["items_per_s"] > 0 and rec["eta_s"] is not None and rec["eta_s"] > 0
    on_disk = json.loads((tmp_path / ".rota" / "progress.json").read_text())
    assert {k: on_disk[k] for k in ("done", "total", "unit")} == {"done": 50, "total": 100, "unit": "items"}
    assert shard.progress(100, 100, out_dir=tmp_path)["eta_s"] == 0.0  # the last one is never throttled


# ---------------------------------------------------------- kill -9 and resume

_LOOP_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import rota.shard
    side = sys.argv[1]
    for chunk in rota.shard.chunks(rota.shard.range(40), 4):
        with open(side, "a") as f:          # one line per chunk *processed*
            f.write(f"{chunk.start}\\n")
        time.sleep(0.05)
        chunk.save(np.arange(chunk.start, chunk.stop, dtype=np.float64)[:, None])
    """
)


@pytest.mark.parametrize("kill_after", [1, 3, 6])
def test_sigkill_midway_redoes_at_most_one_chunk(tmp_path: Path, kill_after: int) -> None:
    script = tmp_path / "loop.py"
    script.write_text(_LOOP_SCRIPT)
    side = tmp_path / "processed.txt"
    out = tmp_path / "out"
    env = {**os.environ, "ROTA_OUT": str(out), "ROTA_SHARD_INDEX": "0", "ROTA_SHARD_COUNT": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(side)], env=env)
    wait_for(lambda: side.exists() and len(side.read_text().splitlines()) >= kill_after, timeout=60, interval=0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    first = side.read_text().splitlines()
    assert len(first) < 10, "the loop finished before it was killed; the test proves nothing"
    saved_before = len(shard.saved_chunks(out))
    assert len(first) - saved_before <= 1  # at most the chunk in flight was lost

    subprocess.run([sys.executable, str(script), str(side)], env=env, check=True, timeout=60)
    lines = side.read_text().splitlines()
    second = lines[len(first):]
    n_chunks = 10
    assert len(lines) - n_chunks <= 1, f"re-did {len(lines) - n_chunks} chunks: {lines}"
    assert sorted(set(map(int, lines))) == list(range(0, 40, 4))
    assert len(second) == n_chunks - saved_before  # every finished chunk was skipped
    rep = shard.merge([out], tmp_path / "all.npy", expect_rows=40, expect_dim=1)
    assert np.array_equal(np.load(tmp_path / "all.npy")[:, 0], np.arange(40))
    assert rep.chunks == n_chunks


# ----------------------------------------------------------------------- merge


def _make_shards(root: Path, n_items: int = 103, n: int = 4, dim: int = 8, chunk: int = 10) -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(0)
    full = rng.normal(size=(n_items, dim)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    dirs = []
    for i in range(n):
        d = root / f"embed-{i}"
        for c in shard.chunks(shard.range(n_items, i, n), chunk, out_dir=d):
            c.save(full[c.start : c.stop])
        dirs.append(d)
    return dirs, full


def test_merge_passes_and_preserves_order(tmp_path: Path) -> None:
    dirs, full = _make_shards(tmp_path / "s", n=12)  # embed-10 sorts after embed-9
    rep = shard.merge(list(reversed(dirs)), tmp_path / "m.npy", expect_rows=103, expect_dim=8, check_unit_norm=True)
    assert np.array_equal(np.load(tmp_path / "m.npy"), full)
    assert (rep.rows, rep.shape, rep.shards) == (103, (103, 8), 12)
    assert rep.norm_min is not None and abs(rep.norm_min - 1) < 1e-3


def test_merge_from_glob_and_needs_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs, full = _make_shards(tmp_path / "s")
    shard.merge(str(tmp_path / "s" / "embed-*"), tmp_path / "g.npy", expect_rows=103)
    assert np.array_equal(np.load(tmp_path / "g.npy"), full)
    monkeypatch.setenv("ROTA_NEEDS_OUT", json.dumps({d.name: str(d) for d in dirs}))
    shard.merge(None, tmp_path / "n.npy", expect_rows=103, expect_dim=8, check_unit_norm=True)
    assert np.array_equal(np.load(tmp_path / "n.npy"), full)


def _make_env_shards(root: Path, monkeypatch: pytest.MonkeyPatch, n: int = 3, n_items: int = 20) -> list[Path]:
    """Shards made the way rota runs them: ROTA_SHARD_INDEX/COUNT in the environment."""
    dirs = []
    for i in range(n):
        monkeypatch.setenv("ROTA_SHARD_INDEX", str(i))
        monkeypatch.setenv("ROTA_SHARD_COUNT", str(n))
        d = root / f"embed-{i}"
        for c in shard.chunks(shard.range(n_items), 4, out_dir=d):
            c.save(np.ones((len(c), 2)))
        dirs.append(d)
    monkeypatch.delenv("ROTA_SHARD_INDEX")
    monkeypatch.delenv("ROTA_SHARD_COUNT")
    return dirs


def test_merge_names_a_missing_last_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = _make_env_shards(tmp_path, monkeypatch)
    with pytest.raises(MergeError, match=r"shard\(s\) \[2\] of 3 are missing"):
        shard.merge(dirs[:2], tmp_path / "m.npy")  # no expect_rows: only the manifests can tell
    with pytest.raises(MergeError, match="more than one folder|overlap"):
        shard.merge([*dirs, dirs[1]], tmp_path / "m.npy")
    assert shard.merge(dirs, tmp_path / "m.npy").rows == 20


def test_merge_from_needs_out_ignores_other_needed_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = _make_env_shards(tmp_path, monkeypatch)
    (tmp_path / "prepare").mkdir()
    needs = {d.name: str(d) for d in dirs} | {"prepare": str(tmp_path / "prepare")}
    monkeypatch.setenv("ROTA_NEEDS_OUT", json.dumps(needs))
    assert shard.merge(None, tmp_path / "m.npy", expect_rows=20).shards == 3
    monkeypatch.setenv("ROTA_NEEDS_OUT", json.dumps({"prepare": str(tmp_path / "prepare")}))
    with pytest.raises(MergeError, match="ran a chunk loop named 'chunk'"):
        shard.merge(None, tmp_path / "m.npy")


def test_merge_handles_empty_shards(tmp_path: Path) -> None:
    dirs, full = _make_shards(tmp_path / "s", n_items=3, n=5, chunk=1)
    shard.merge(dirs, tmp_path / "m.npy", expect_rows=3)
    assert np.array_equal(np.load(tmp_path / "m.npy"), full)


@pytest.mark.parametrize(
    ("damage", "kwargs", "match"),
    [
        ("none", {"expect_rows": 100}, "merged 103 rows, expected 100"),
        ("none", {"expect_dim": 384}, r"expected \(103, 384\)"),
        ("delete_chunk", {}, "missing"),
        ("delete_last_chunk", {}, "missing"),
        ("scale_row", {"check_unit_norm": True}, "L2 norm outside"),
        ("nan_row", {"check_unit_norm": True}, "L2 norm outside"),
        ("wrong_width", {}, "rows of shape"),
        ("drop_shard", {}, "gap"),
        ("missing_dir", {}, "does not exist"),
        ("json_chunk", {}, "not a numpy array"),
    ],
)
def test_merge_failures_are_named(tmp_path: Path, damage: str, kwargs: dict, match: str) -> None:
    dirs, _ = _make_shards(tmp_path / "s")
    chunks1 = shard.saved_chunks(dirs[1])
    if damage == "delete_chunk":
        chunks1[1][2].unlink()
    elif damage == "delete_last_chunk":
        chunks1[-1][2].unlink()
    elif damage in ("scale_row", "nan_row", "wrong_width"):
        p = chunks1[0][2]
        a = np.load(p)
        if damage == "scale_row":
            a[3] *= 1.1
        elif damage == "nan_row":
            a[3] = np.nan
        else:
            a = np.zeros((a.shape[0], 9), dtype=a.dtype)
        np.save(p, a)
    elif damage == "drop_shard":
        dirs = [dirs[0], dirs[2], dirs[3]]
    elif damage == "missing_dir":
        dirs.append(tmp_path / "nope")
    elif damage == "json_chunk":
        p = chunks1[0][2]
        p.rename(p.with_suffix(".json"))
    target = tmp_path / "m.npy"
    with pytest.raises(MergeError, match=match):
        shard.merge(dirs, target, **kwargs)
    assert not target.exists()
    assert not list(tmp_path.glob(".m.npy.*"))  # no temp file left behind


def test_merge_without_anything_to_merge(tmp_path: Path) -> None:
    with pytest.raises(MergeError, match="ROTA_NEEDS_OUT"):
        shard.merge(None, tmp_path / "x.npy")
    with pytest.raises(MergeError, match="matches no folder"):
        shard.merge(str(tmp_path / "zz-*"), tmp_path / "x.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MergeError, match="no chunks"):
        shard.merge([tmp_path / "empty"], tmp_path / "x.npy")
