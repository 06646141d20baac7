"""A background run's journal, on disk in its run folder, and ``lightning_magic.attach``: the
journal read as hostile input (truncated, garbage, a FIFO or a symlink in its place), then in real
Jupyter kernels: a run journals its events, status, notes and result; ``attach`` in another cell
redraws and follows it there; a second kernel finds it on disk, follows it to its end and loads
its weights.

Ordering is proven with events: rank 0 writes a FIFO once it is training, runs that must still
be running when a check is made train until stopped, and a journal's growth is waited for on the
kernel's own output (an iopub message), not on a clock."""

from __future__ import annotations

import json
import os

import psutil
import pytest
from support.jupyter_kernels import fifo_reader, package_kernel, wait_for
from support.kernels import BEACON_SETUP as SETUP
from support.kernels import ENDLESS

from lightning_magic.background.journal import Journal, journal_path
from lightning_magic.background.journal_reading import MAX_LINE, JournalFile, JournalState


def read_all(path) -> tuple[JournalState, list[dict]]:
    state, records = JournalState(), JournalFile(str(path)).read_new()
    for record in records:
        state.apply(record)
    return state, records


# -- the journal as hostile input ---------------------------------------------------------------
def test_a_journal_with_garbage_and_a_truncated_line_reads_as_its_whole_records(tmp_path):
    path = tmp_path / "journal-abc.jsonl"
    good = [{"kind": "begin", "run_id": "abc", "model": "Net", "pid": 1234, "world_size": 2},
            {"kind": "event", "event": {"kind": "step", "epoch": 0, "step": 5,
                                        "metrics": {"loss": 0.5, "bad": "x", "nan": float("nan")}}},
            {"kind": "status", "status": "finished"}]
    lines = [json.dumps(good[0]), "not json at all", "[1, 2, 3]", "\x00\xff\xfe garbage",
             '{"kind": 7}', json.dumps(good[1]), '{"kind": "event", "event": {"kind": "step", '
             '"step": "__import__(\'os\').system(\'touch pwned\')", "metrics": [1]}}',
             "x" * (MAX_LINE + 10), '{"kind": "note", "text": ["not", "text"]}',
             json.dumps(good[2]), '{"kind": "event", "event": {"kind": "step", "st']
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))
    state, records = read_all(path)
    assert [r["kind"] for r in records] == ["begin", "event", "event", "note", "status"]
    assert state.begin == {"run_id": "abc", "model": "Net", "pid": 1234, "world_size": 2}
    assert state.events == [{"kind": "step", "epoch": 0, "step": 5, "metrics": {"loss": 0.5}},
                            {"kind": "step", "metrics": {}}]
    assert state.rows == [{"stage": "train", "epoch": 0, "step": 5, "loss": 0.5}]
    assert state.notes == [] and state.status == "finished"
    assert not (tmp_path / "pwned").exists()


def test_a_line_is_taken_once_its_end_is_written(tmp_path):
    path = tmp_path / "journal-abc.jsonl"
    record = json.dumps({"kind": "note", "text": "hello"})
    path.write_text(record[:10])
    journal = JournalFile(str(path))
    assert journal.read_new() == []
    with open(path, "a") as handle:
        handle.write(record[10:] + "\n" + record[:5])
    assert journal.read_new() == [{"kind": "note", "text": "hello"}]
    with open(path, "a") as handle:
        handle.write(record[5:] + "\n")
    assert journal.read_new() == [{"kind": "note", "text": "hello"}]


def test_a_fifo_or_a_symlink_in_place_of_a_journal_reads_as_nothing(tmp_path):
    fifo = tmp_path / "journal-fifo.jsonl"
    os.mkfifo(fifo)
    assert JournalFile(str(fifo)).read_new() == []  # returns at once: no writer is waited for
    target = tmp_path / "secret"
    target.write_text(json.dumps({"kind": "note", "text": "secret"}) + "\n")
    link = tmp_path / "journal-link.jsonl"
    link.symlink_to(target)
    assert JournalFile(str(link)).read_new() == []
    assert JournalFile(str(tmp_path / "missing.jsonl")).read_new() == []


def test_a_journal_that_cannot_be_written_leaves_its_writer_unharmed(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the run folder should be")
    journal = Journal(journal_path(str(blocked), "abc"))
    journal.write("note", text="nowhere to go")
    journal.status("finished")
    journal.close()
    written = Journal(journal_path(str(tmp_path / "run"), "abc"))
    written.write("note", text=object())  # what json cannot write is written as its str
    written.close()
    state, _ = read_all(tmp_path / "run" / "journal-abc.jsonl")
    assert state.notes and state.notes[0].startswith("<object object")


# -- in real kernels ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("journal")


@pytest.fixture(scope="module")
def kernel(workdir):
    kernel = package_kernel(str(workdir), SETUP)
    yield kernel
    kernel.close()


def _views(kernel, msg_id: str) -> list[str]:
    return [m["content"]["transient"]["display_id"] for m in kernel.of(msg_id, "display_data")
            if m["content"].get("transient", {}).get("display_id")]


@pytest.mark.slow
def test_a_run_journals_its_events_status_and_result_and_attach_follows_it_in_its_own_cell(
        kernel, tmp_path):
    training = fifo_reader(tmp_path / "training.fifo")
    kernel.ok(f"{ENDLESS}\nmodel = Beacon({str(tmp_path / 'training.fifo')!r})\n"
              "run = pl.Trainer().fit(model, loader)")
    wait_for(training, "the background run never trained")
    ident, path = kernel.ok("print(run.id, run.journal.path)").split()
    assert os.path.exists(os.path.join(os.path.dirname(path), "run.json")), "in the run folder"
    state, _ = read_all(path)
    assert state.begin["run_id"] == ident and state.begin["model"] == "Beacon"
    assert state.status == "running" and state.notes[0].startswith("Training Beacon on 2 CPU")
    assert any(event["kind"] == "step" for event in state.events), "rank 0's events"

    attach = kernel.execute(f"import lightning_magic\nattached = lightning_magic.attach("
                            f"{ident[:6]!r})\nprint(attached is run)")
    assert kernel.reply(attach)["status"] == "ok" and kernel.stdout(attach).strip() == "True"
    views = _views(kernel, attach)
    assert views, "attach drew no view in its own cell"
    kernel.wait_until(lambda m: m["msg_type"] == "update_display_data"
                      and m["content"]["transient"]["display_id"] == views[0],
                      "the attached view following the run")
    listed = kernel.execute(f"%lightning_runs --attach {ident}")
    assert kernel.reply(listed)["status"] == "ok" and _views(kernel, listed)
    assert ident in kernel.value(listed)

    assert kernel.ok("print(run.stop().status)").strip() == "interrupted"
    state, _ = read_all(path)
    assert state.status == "interrupted" and state.result["last_model_path"]
    assert state.result["history"] and state.result["global_step"] > 0
    updates = [m for m in kernel.messages if m["msg_type"] == "update_display_data"
               and m["content"]["transient"]["display_id"] == views[0]]
    assert {m["parent_header"]["msg_id"] for m in updates} == {attach}, \
        "the attached view sent output as another cell's"


@pytest.mark.slow
def test_another_kernel_finds_a_run_on_disk_follows_it_to_its_end_and_loads_its_weights(
        kernel, workdir, tmp_path):
    training = fifo_reader(tmp_path / "training.fifo")
    kernel.ok(f"{ENDLESS}\nmodel = Beacon({str(tmp_path / 'training.fifo')!r})\n"
              "run = pl.Trainer().fit(model, loader)")
    wait_for(training, "the background run never trained")
    ident = kernel.ok("print(run.id)").strip()
    other = package_kernel(str(workdir), SETUP)  # the same notebook folder, a new kernel
    try:
        attach = other.execute(f"import lightning_magic\nfound = lightning_magic.attach("
                               f"{ident!r})\nprint(type(found).__name__, found.status, found.id)")
        assert other.reply(attach)["status"] == "ok"
        assert other.stdout(attach).split() == ["JournalRun", "running", ident]
        views = _views(other, attach)
        assert views, "attach drew no view"
        other.wait_until(lambda m: m["msg_type"] == "update_display_data"
                         and m["content"]["transient"]["display_id"] == views[0],
                         "the attached view following the other kernel's run")

        kernel.ok("stopped = run.stop()\nprint(stopped.last_model_path)")
        out = other.ok("found.wait(timeout=120)\nfresh = Beacon()\n"
                       "print(found.status, found.done(), len(found.history) > 0, "
                       "found.load_into(fresh) == found.last_model_path)\n"
                       "print(fresh.layer.weight.sum().item())")
        first, weights = out.strip().splitlines()
        assert first.split() == ["interrupted", "True", "True", "True"]
        trained = kernel.ok("print(model.layer.weight.sum().item())").strip()
        assert weights.strip() == trained, "the loaded weights are the run's, at its stop"

        missing = other.execute("lightning_magic.attach('zzzz')")
        reply = other.reply(missing)
        assert reply["status"] == "error" and reply["ename"] == "UsageError"
        assert ident in reply["evalue"], "the error lists the runs there are"
    finally:
        other.close()


@pytest.mark.slow
def test_a_run_whose_kernel_died_is_gone_for_whoever_attaches(workdir, tmp_path):
    dying = package_kernel(str(workdir), SETUP)
    watcher = package_kernel(str(workdir), SETUP)
    try:
        training = fifo_reader(tmp_path / "training.fifo")
        dying.ok(f"{ENDLESS}\nmodel = Beacon({str(tmp_path / 'training.fifo')!r})\n"
                 "run = pl.Trainer().fit(model, loader)")
        wait_for(training, "the background run never trained")
        ident = dying.ok("print(run.id)").strip()
        watcher.ok(f"import lightning_magic\nfound = lightning_magic.attach({ident!r})")
        dying.km.shutdown_kernel(now=True)  # killed: it writes no end to the journal
        out = watcher.ok("print(found.join(timeout=120), found.status, found.done())")
        assert out.split() == ["True", "gone", "True"]
        waited = watcher.reply(watcher.execute("found.wait()"))  # not finished: it raises
        assert waited["status"] == "error" and waited["ename"] == "RunFailed", waited
        assert "went without saying how it ended" in waited["evalue"]
    finally:
        dying.close()
        watcher.close()


def test_a_journal_naming_another_process_as_its_supervisor_gets_it_no_signal(tmp_path):
    from IPython.core.error import UsageError

    from lightning_magic.background.attach import JournalRun
    from lightning_magic.background.follow import Follower

    me = psutil.Process()
    path = tmp_path / "journal-forged.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in (
        {"kind": "begin", "run_id": "forged", "pid": me.pid, "pid_started": me.create_time()},
        {"kind": "supervisor", "pid": me.pid, "pid_started": me.create_time()})) + "\n")
    run = JournalRun(Follower(str(path)))
    assert run.status == "running" and not run.done()
    with pytest.raises(UsageError, match=f"process {me.pid}, which its journal names as its "
                                         "supervisor, is not writing it; nothing was stopped"):
        run.stop(wait=False)


def test_a_journal_longer_than_one_look_is_read_to_its_end_when_first_opened(tmp_path):
    from lightning_magic.background.journal_reading import MAX_READ

    path = tmp_path / "journal-long.jsonl"
    note = json.dumps({"kind": "note", "text": "x" * 1000}) + "\n"
    with open(path, "w") as handle:
        handle.write(json.dumps({"kind": "begin", "run_id": "long"}) + "\n")
        handle.write(note * (MAX_READ // len(note) + 10))
        handle.write(json.dumps({"kind": "status", "status": "finished"}) + "\n")
    records = JournalFile(str(path)).read_all()
    assert records[-1] == {"kind": "status", "status": "finished"}
    assert len(records) == MAX_READ // len(note) + 12


# -- the index of run journals: attach finds a run wherever its folder is ------------------------
def test_the_index_of_run_journals_lists_only_entries_that_pass_its_checks(tmp_path, monkeypatch):
    from lightning_magic.background import index

    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "run"
    folder.mkdir()
    for run_id in ("good", "linked", "other", "gone", "big", "fifo", "dots"):
        (folder / f"journal-{run_id}.jsonl").write_text("{}\n")
        index.add(run_id, str(folder / f"journal-{run_id}.jsonl"))
    entries = tmp_path / "data" / "lightning_magic" / "runs"
    (folder / "journal-gone.jsonl").unlink()
    real = tmp_path / "elsewhere"
    real.mkdir()
    (real / "journal-linked.jsonl").write_text("{}\n")
    (tmp_path / "via").symlink_to(real)  # a path through a symlink is not followed
    (entries / "linked.json").write_text(json.dumps({"journal": str(tmp_path / "via" /
                                                                     "journal-linked.jsonl")}))
    (entries / "other.json").write_text(json.dumps({"journal": str(folder / "journal-good.jsonl")}))
    (entries / "big.json").write_text(json.dumps({"journal": str(folder / "journal-big.jsonl"),
                                                  "pad": "x" * index.MAX_BYTES}))
    (entries / "fifo.json").unlink()
    os.mkfifo(entries / "fifo.json")
    (entries / "dots.json").write_text(json.dumps({"journal": str(folder / ".." / "run" /
                                                                   "journal-dots.jsonl")}))
    (entries / "bad name!.json").write_text(json.dumps({"journal": "/etc/passwd"}))
    assert index.indexed() == {"good": str(folder / "journal-good.jsonl")}
    assert not (entries / "gone.json").exists(), "the entry of a journal that is gone is removed"


@pytest.mark.slow
def test_a_run_whose_trainer_has_its_own_default_root_dir_is_found_from_a_new_kernel(
        tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))  # the kernel's too
    (tmp_path / "notebook").mkdir()
    own = tmp_path / "own_root"
    kernel = package_kernel(str(tmp_path / "notebook"), SETUP)
    try:
        out = kernel.ok("%%lightning_train --background --accelerator cpu --devices 1 "
                        f"--max-epochs 1\nmodel = Beacon()\nrun = pl.Trainer(default_root_dir="
                        f"{str(own)!r}).fit(model, loader)\nrun.wait()\n"
                        "print(run.id, run.journal.path)")
        ident, path = out.split()[-2:]
        assert path.startswith(str(own)), "the journal is beside the run's checkpoints"
        kernel.restart(SETUP)
        found = kernel.ok(f"import lightning_magic\nfound = lightning_magic.attach({ident[:8]!r})"
                          "\nfound.wait(timeout=120)\nfresh = Beacon()\n"
                          "print(type(found).__name__, found.status, found.load_into(fresh))")
        kind, status, loaded = found.split()[-3:]
        assert (kind, status) == ("JournalRun", "finished")
        assert loaded.startswith(str(own)), "its checkpoint, where Lightning placed it"
    finally:
        kernel.close()
