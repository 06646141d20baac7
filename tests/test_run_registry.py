"""Runs published in Jupyter's runtime directory: whole-file writes a concurrent reader never sees
half of, throttled updates, removal, files of dead kernels ignored and cleaned, labels for the
processes of each rank. Real files, real threads, real (exited) processes."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest
from support.runs import children, dead_pid, state

from lightning_magic.readings.runs import (
    PublishedRun,
    list_runs,
    rank_labels,
    runtime_dir,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def read(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_publish_writes_a_private_file_that_list_runs_returns(tmp_path):
    run = PublishedRun(state(), str(tmp_path))
    path = run.publish()
    assert os.path.dirname(path) == str(tmp_path)
    assert os.path.basename(path) == "lightning-magic-run-a1b2c3.json"
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0  # readable by its owner only
    written = read(path)
    assert written["kernel_id"] == "kernel-1" and written["model"] == "Regressor"
    assert isinstance(written["pid_started"], float) and isinstance(written["updated"], float)
    assert [r["run_id"] for r in list_runs(str(tmp_path))] == ["a1b2c3"]
    run.remove()
    run.remove()  # twice is fine
    assert list_runs(str(tmp_path)) == [] and os.listdir(tmp_path) == []


def test_the_runtime_directory_is_jupyters(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    assert runtime_dir() == str(tmp_path / "runtime")
    with PublishedRun(state()) as run:
        assert os.path.isfile(run.path) and run.path.startswith(str(tmp_path / "runtime"))
        assert [r["run_id"] for r in list_runs()] == ["a1b2c3"]
    assert list_runs() == []


def test_the_context_manager_removes_the_file_when_the_run_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with PublishedRun(state(), str(tmp_path)):
            raise RuntimeError("the run failed")
    assert os.listdir(tmp_path) == []


def test_updates_are_written_at_most_once_per_interval(tmp_path):
    clock = Clock()
    run = PublishedRun(state(), str(tmp_path), min_interval=3600.0, clock=clock)
    run.publish()
    run.update(step=1)                 # the first update is written at once
    assert read(run.path)["step"] == 1
    clock.now += 10.0
    run.update(step=2, metrics={"loss": 0.5})
    run.update(step=3, metrics={"loss": 0.25})
    assert read(run.path)["step"] == 1  # held back
    clock.now += 3600.0
    run.update(step=4, metrics={"loss": 0.125})
    assert read(run.path)["step"] == 4 and read(run.path)["metrics"] == {"loss": 0.125}
    clock.now += 1.0
    run.update(epoch=1, step=5)
    assert read(run.path)["step"] == 4
    run.flush()                         # what was held back, now
    assert read(run.path)["step"] == 5 and read(run.path)["epoch"] == 1
    run.remove()
    run.update(step=6)                  # after the end: no file comes back
    run.flush()
    assert os.listdir(tmp_path) == []


def test_an_update_held_back_is_written_when_the_interval_ends(tmp_path):
    run = PublishedRun(state(), str(tmp_path), min_interval=0.05, clock=Clock())
    run.publish()
    run.update(step=1)
    run.update(step=2)  # held back: no time passed on the run's clock
    assert read(run.path)["step"] == 1
    timer = run._timer
    assert timer is not None
    timer.join(10)
    assert read(run.path)["step"] == 2
    run.remove()


def test_a_reader_never_sees_a_partial_file(tmp_path):
    run = PublishedRun(state(), str(tmp_path), min_interval=0.0)
    run.publish()
    done, seen, failures = threading.Event(), set(), []

    def reader() -> None:
        while not done.is_set():
            try:
                seen.add(read(run.path)["step"])
            except (OSError, ValueError) as error:
                failures.append(repr(error))

    thread = threading.Thread(target=reader)
    thread.start()
    for step in range(1, 1501):
        # sizes vary from write to write, so a torn write would be visible as bad JSON
        run.update(step=step, metrics={f"metric_{i}": step / 7 for i in range(step % 40)})
    done.set()
    thread.join(30)
    run.remove()
    assert failures == []
    assert len(seen) > 1  # the reader did read while the file changed
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_files_of_dead_kernels_are_ignored_and_removed(tmp_path):
    live = PublishedRun(state("live"), str(tmp_path))
    live.publish()
    gone = PublishedRun(state("gone", pid=dead_pid()), str(tmp_path))
    gone.publish()
    reused = PublishedRun(state("reused", pid_started=12345.0), str(tmp_path))  # pid reused
    reused.publish()
    assert len(os.listdir(tmp_path)) == 3
    assert [r["run_id"] for r in list_runs(str(tmp_path))] == ["live"]
    assert sorted(os.listdir(tmp_path)) == ["lightning-magic-run-live.json"]
    live.remove()


def test_unreadable_files_are_skipped(tmp_path):
    (tmp_path / "lightning-magic-run-torn.json").write_text('{"run_id": "torn", "pid": ')
    (tmp_path / "lightning-magic-run-list.json").write_text("[1, 2]")
    (tmp_path / "lightning-magic-run-nopid.json").write_text('{"run_id": "nopid"}')
    (tmp_path / "kernel-abc.json").write_text('{"pid": %d}' % os.getpid())
    with PublishedRun(state("ok"), str(tmp_path)):
        assert [r["run_id"] for r in list_runs(str(tmp_path))] == ["ok"]
    assert list_runs(str(tmp_path / "missing")) == []


def test_non_finite_metrics_are_written_as_null(tmp_path):
    with PublishedRun(state(metrics={"loss": float("nan"), "acc": 0.5}), str(tmp_path)) as run:
        with open(run.path, encoding="utf-8") as handle:
            text = handle.read()

        def refuse(constant: str) -> None:
            raise ValueError(f"{constant} is not JSON")

        assert json.loads(text, parse_constant=refuse)["metrics"] == {"loss": None, "acc": 0.5}


def test_rank_labels_name_the_kernel_and_rank_of_live_runs(tmp_path):
    with children(3) as (a, b, c):
        with PublishedRun(state("first", kernel_id="k1", rank_pids=[a, b]), str(tmp_path)), \
                PublishedRun(state("second", kernel_id="k2", rank_pids=[c]), str(tmp_path)):
            PublishedRun(state("dead", pid=dead_pid(), rank_pids=[c]), str(tmp_path)).publish()
            labels = rank_labels(str(tmp_path))
            assert [r["rank_pids"] for r in list_runs(str(tmp_path))] == [[a, b], [c]]
    assert labels == {
        a: {"kernel_id": "k1", "rank": 0, "run_id": "first"},
        b: {"kernel_id": "k1", "rank": 1, "run_id": "first"},
        c: {"kernel_id": "k2", "rank": 0, "run_id": "second"},
    }
    assert rank_labels(str(tmp_path)) == {}


def test_ranks_that_have_ended_keep_their_place(tmp_path):
    gone = dead_pid()
    with children(1) as (alive,):
        with PublishedRun(state(rank_pids=[gone, alive]), str(tmp_path)):
            assert rank_labels(str(tmp_path))[alive]["rank"] == 1


def test_a_run_id_that_cannot_name_a_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"'\.\./escape'"):
        PublishedRun(state("../escape"), str(tmp_path))
