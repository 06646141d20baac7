"""``%%lightning_sweep`` in a real InteractiveShell: Optuna trials of 2-rank CPU runs (gloo), the
same parameters on every rank of a trial, a crashed trial beside good ones, the results."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from support.cells import DEFINITIONS

from lightning_magic.sweep.table import Table
from lightning_magic.train.returns.results import TrainingRun

pytest.importorskip("optuna")
pytestmark = pytest.mark.slow

# Each rank writes what it trains with: the lr its model was built with in the kernel, and what
# the trial it inherited answers when the rank itself asks for "lr".
RANKS_WRITE = '''
import os, signal

class WhatEachRankHas(pl.Callback):
    def __init__(self, folder, trial):
        self.folder, self.trial = folder, trial

    def on_train_start(self, trainer, pl_module):
        asked = self.trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        name = f"trial{self.trial.number}-rank{trainer.global_rank}-pid{os.getpid()}"
        with open(os.path.join(self.folder, name), "w") as out:
            out.write(f"{pl_module.lr!r} {asked!r}")


class Meeting(pl.Callback):
    """Trial 0's rank 0 waits at the start of training until trial 1's rank 0 is there too."""

    def __init__(self, fifo, trial):
        self.fifo, self.trial = fifo, trial

    def on_train_start(self, trainer, pl_module):
        if trainer.global_rank == 0:
            with open(self.fifo, "w" if self.trial.number == 0 else "r") as meet:
                meet.write("here") if self.trial.number == 0 else meet.read()


class PressesStop(pl.Callback):
    """Rank 0 presses the stop button (SIGINT to the kernel, as the notebook's) once training."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == 0 and trainer.global_step == 2:
            os.kill(os.getppid(), signal.SIGINT)


class Exploding(Regressor):
    def training_step(self, batch, batch_idx):
        raise RuntimeError("trial exploded")
'''

SWEEP = "%%lightning_sweep --metric val_loss --devices-per-trial 2 --accelerator cpu --max-epochs 2"
SWEEP1 = SWEEP.replace("--devices-per-trial 2", "--devices-per-trial 1")
CELL = '''
model = Regressor(lr=trial.suggest_float("lr", 1e-3, 1e-1, log=True))
trainer = pl.Trainer(callbacks=[WhatEachRankHas(folder, trial)])
trainer.fit(model, DataLoader(dataset, batch_size=16), DataLoader(dataset, batch_size=32))
'''


@pytest.fixture
def shell(ip, tmp_path):
    assert ip.run_cell(DEFINITIONS).success
    assert ip.run_cell(RANKS_WRITE).success
    (tmp_path / "ranks").mkdir()
    ip.user_ns["folder"] = str(tmp_path / "ranks")
    return ip


def sweep(shell, line, cell=CELL, head=SWEEP):
    with capture_output() as captured:
        result = shell.run_cell(f"{head} {line}\n{cell}")
    assert result.success, (result.error_in_exec, captured.stdout, captured.stderr)
    return result.result, captured


def test_every_rank_of_a_trial_trains_with_the_parameters_the_kernel_drew(shell, tmp_path,
                                                                          no_orphans):
    done, captured = sweep(shell, "--trials 3 --sampler random")
    assert done is shell.user_ns["lightning_sweep"]
    assert [t.status for t in done.trials] == ["complete"] * 3
    written = {path.name: path.read_text().split() for path in (tmp_path / "ranks").iterdir()}
    for record in done.trials:
        ranks = {name.split("-")[1]: values for name, values in written.items()
                 if name.startswith(f"trial{record.number}-")}
        assert set(ranks) == {"rank0", "rank1"}, written
        lr = repr(record.params["lr"])
        assert all(values == [lr, lr] for values in ranks.values()), (lr, ranks)
    pids = {name.split("-")[2] for name in written}
    assert len(pids) == 6, "each trial's ranks are processes of their own"
    assert len({record.params["lr"] for record in done.trials}) == 3
    assert "trial" not in shell.user_ns, "the trial is the sweep's, not left in the namespace"
    tables = [out for out in captured.outputs if (out.transient or {}).get("display_id")]
    assert len({out.transient["display_id"] for out in tables}) == 1, "one table"
    assert not tables[0].update and all(out.update for out in tables[1:])
    last = tables[-1].data["text/plain"].splitlines()
    assert last[0].split() == ["trial", "params", "status", "progress", "val_loss", "devices",
                               "note"]
    assert "epoch 1/1" in tables[-1].data["text/plain"]  # the last of 2, as Lightning names it
    assert [row.split()[2] for row in last[1:]] == ["complete"] * 3
    assert "<td>complete</td>" in Table(done)._repr_html_()


def test_the_results_are_the_study_its_dataframe_and_the_best_trials_trained_model(shell):
    done, _ = sweep(shell, "--trials 2")
    frame = done.dataframe()
    assert list(frame["state"]) == ["COMPLETE", "COMPLETE"]
    assert list(frame["number"]) == [0, 1] and "params_lr" in frame.columns
    best = min(done.trials, key=lambda record: record.value)
    assert done.study.best_trial.number == best.number
    assert isinstance(done.best, TrainingRun) and done.best is best.run
    assert done.best.metrics["val_loss"] == best.value == done.study.best_value
    model = shell.user_ns["model"]
    assert model is best.model and model.lr == best.params["lr"]
    assert model is not done.trials[1 - best.number].model
    assert shell.user_ns["trainer"].global_step == done.best.global_step > 0
    assert f"best: trial {best.number}" in repr(done)


def test_a_crashed_trial_keeps_its_report_and_the_others_go_on(shell, no_orphans):
    cell = CELL.replace("model = Regressor(", "model = (Exploding if trial.number == 1 "
                                              "else Regressor)(")
    done, _ = sweep(shell, "--trials 3", cell)
    assert [t.status for t in done.trials] == ["complete", "failed", "complete"]
    crashed = done.trials[1]
    assert crashed.report is not None and "trial exploded" in crashed.run.traceback
    assert crashed.value is None and "failed" in crashed.note
    states = [t.state.name for t in done.study.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]
    assert shell.user_ns["model"] is done.best_record().model


def test_a_cell_that_raises_in_the_kernel_stops_the_sweep_and_raises(shell):
    with capture_output():
        result = shell.run_cell(f"{SWEEP} --trials 3\nraise ValueError('no data here')")
    assert isinstance(result.error_in_exec, ValueError)
    done = shell.user_ns["lightning_sweep"]
    assert [t.status for t in done.trials] == ["failed"]
    assert done.study.trials[0].state.name == "FAIL"


def test_a_cell_that_raises_after_its_fit_started_fails_its_trial_and_stops_the_sweep(
        shell, no_orphans):
    with capture_output():
        result = shell.run_cell(f"{SWEEP} --trials 3\n{CELL}raise RuntimeError('after the fit')")
    assert isinstance(result.error_in_exec, RuntimeError)
    done = shell.user_ns["lightning_sweep"]
    assert [t.status for t in done.trials] == ["failed"]
    assert "the cell raised RuntimeError: after the fit" in done.trials[0].note
    assert done.study.trials[0].state.name == "FAIL"


def test_a_cell_that_reads_what_its_validate_returned_runs_as_in_plain_lightning(shell):
    cell = CELL + "score = trainer.validate(model, DataLoader(dataset, batch_size=32))[0]\n"
    done, _ = sweep(shell, "--trials 2", cell)
    assert [t.status for t in done.trials] == ["complete", "complete"]
    best = done.best_record()
    assert best.bound["score"]["val_loss"] == pytest.approx(best.value)


def test_a_metric_no_trial_logs_stops_the_sweep_after_the_first_and_says_what_was_logged(shell):
    with capture_output():
        result = shell.run_cell(f"{SWEEP.replace('val_loss', 'val_los')} --trials 3\n{CELL}")
    assert isinstance(result.error_in_exec, UsageError)
    message = str(result.error_in_exec)
    assert message.startswith("--metric 'val_los': trial 0 trained to its end and logged no "
                              "'val_los' (it logged train_loss, val_loss); did you mean "
                              "--metric val_loss?"), message
    assert len(shell.user_ns["lightning_sweep"].trials) < 3


@pytest.mark.parametrize("line, message", [
    ("--trials 2 --metric val_loss --sampler bayes",
     "--sampler 'bayes' is not one of: tpe, random, grid."),
    ("--trials 2", "%%lightning_sweep needs --metric NAME"),
    ("--metric val_loss", "%%lightning_sweep needs --trials N or --timeout SECONDS"),
    ("--trials 0 --metric val_loss", "--trials"),
    ("--trials 2 --metric val_loss --devices 2",
     "%%lightning_sweep sets --devices itself for every trial; use --devices-per-trial D."),
    ("--trials 2 --metric val_loss --max-epochz 2", "unrecognized arguments: --max-epochz 2"),
    ("--trails 2 --metric val_loss",
     "%%lightning_sweep: unrecognized arguments: --trails 2; did you mean --trials?"),
    ("--trials 2 --metric val_loss --background=maybe",
     "%%lightning_sweep: --background takes no value (it was given 'maybe'): write --background "
     "alone."),
    ("--trials 2 --metric val_loss --resume",
     "%%lightning_sweep --resume continues the study kept in a journal file: give --storage FILE"),
    ("--trials 2 --metric val_loss --resume last --storage s.journal",
     "%%lightning_sweep --resume takes no value (got --resume 'last')"),
])
def test_a_bad_flag_is_a_one_line_usage_error_before_anything_runs(shell, line, message):
    with pytest.raises(UsageError) as raised:
        shell.run_cell_magic("lightning_sweep", line, "assert False, 'the cell ran'")
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert "lightning_sweep" not in shell.user_ns


def test_the_help_lists_the_sweeps_flags(shell):
    with capture_output() as captured:
        shell.run_line_magic("pinfo", "%%lightning_sweep")
    for flag in ("--trials", "--metric", "--direction", "--devices-per-trial", "--sampler",
                 "--pruner", "--storage", "--resume", "--background", "--timeout"):
        assert flag in captured.stdout
    assert "--trials N then runs N more trials" in " ".join(captured.stdout.split())


def test_a_trial_worse_than_the_median_is_pruned_at_an_epoch_end_and_stopped(shell):
    # --seed: every trial starts from the same weights; the sixth (after MedianPruner's five
    # startup trials) does not learn (lr 0), so its first epoch is worse than every other's,
    # and without the pruner it would train 1000 epochs
    cell = CELL.replace('model = Regressor(lr=trial.suggest_float("lr", 1e-3, 1e-1, log=True))',
                        'lr = trial.suggest_float("lr", 1e-2, 1e-1, log=True)\n'
                        'model = Regressor(lr=lr if trial.number < 5 else 0.0)').replace(
        "pl.Trainer(", "pl.Trainer(max_epochs=2 if trial.number < 5 else 1000, ")
    with capture_output() as captured:
        result = shell.run_cell("%%lightning_sweep --metric val_loss --devices-per-trial 2 "
                                "--accelerator cpu --seed 0 --trials 6 --pruner median\n" + cell)
    assert result.success, (result.error_in_exec, captured.stdout)
    done = result.result
    assert [t.status for t in done.trials] == ["complete"] * 5 + ["pruned"]
    pruned = done.trials[5]
    assert pruned.note == "pruned at epoch 0" and pruned.run.status == "interrupted"
    assert pruned.run.epoch_reached() < 999 and "/999" in pruned.progress()
    assert done.study.trials[5].state.name == "PRUNED"
    assert 0 in done.study.trials[5].intermediate_values


def test_trials_on_disjoint_slots_run_at_the_same_time(shell, tmp_path, no_orphans):
    from lightning_magic.options.values import usable_cores

    if usable_cores() < 2:
        pytest.skip("one core: one slot, the trials run one after another")
    import os

    os.mkfifo(tmp_path / "meet.fifo")
    shell.user_ns["fifo"] = str(tmp_path / "meet.fifo")
    cell = CELL.replace("callbacks=[", "callbacks=[Meeting(fifo, trial), ")
    # trial 0 trains only once trial 1 has started: it ends only if both ran at once
    done, _ = sweep(shell, "--trials 2", cell, head=SWEEP1)
    assert done.slots >= 2
    assert [t.status for t in done.trials] == ["complete", "complete"]
    # side by side, each trial's process computes with its share of the cores, not all of them
    share = max(1, usable_cores() // done.slots)
    said = f"Each rank computed with {share} CPU thread{'s' if share > 1 else ''} "
    assert all(any(said in note for note in t.run.notes) for t in done.trials), \
        [t.run.notes for t in done.trials]


def test_the_stop_button_stops_the_running_trials_and_keeps_the_ended_ones(shell, no_orphans):
    cell = CELL.replace("callbacks=[", "max_epochs=2 if trial.number == 0 else 1000, "
                                       "callbacks=[PressesStop()] * (trial.number == 1) + [")
    with capture_output():
        result = shell.run_cell(SWEEP.replace(" --max-epochs 2", "") + " --trials 3\n" + cell)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    done = shell.user_ns["lightning_sweep"]
    assert [t.status for t in done.trials] == ["complete", "failed"]
    assert done.trials[1].run.status == "interrupted"
    assert [t.state.name for t in done.study.trials] == ["COMPLETE", "FAIL"]
    assert shell.user_ns["model"] is done.trials[0].model


def test_grid_ends_once_every_choice_ran_and_storage_continues_the_study(shell, tmp_path):
    plain = CELL.replace("WhatEachRankHas(folder, trial)", "")
    cell = plain.replace('trial.suggest_float("lr", 1e-3, 1e-1, log=True)',
                         'trial.suggest_categorical("lr", [0.01, 0.05])')
    journal = tmp_path / "study.journal"
    done, _ = sweep(shell, f"--trials 5 --sampler grid --storage {journal}", cell)
    assert sorted(t.params["lr"] for t in done.trials) == [0.01, 0.05]
    assert [t.status for t in done.trials] == ["complete", "complete"]
    again, _ = sweep(shell, f"--trials 1 --storage {journal} --resume --sampler random", cell)
    # --trials counts this sweep's trials, as study.optimize(n_trials=1) would
    assert [t.number for t in again.trials] == [2] and len(again.study.trials) == 3
    assert [t.state.name for t in again.study.trials] == ["COMPLETE"] * 3


def test_a_storage_that_holds_the_study_is_refused_without_resume(shell, tmp_path):
    import optuna

    journal = tmp_path / "study.journal"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))
    kept = optuna.create_study(storage=storage, study_name="lightning_sweep")
    kept.optimize(lambda trial: trial.suggest_float("lr", 0.0, 1.0), n_trials=3)
    with pytest.raises(UsageError) as raised:
        shell.run_cell_magic("lightning_sweep", f"--trials 2 --metric val_loss --storage "
                             f"{journal}", "assert False, 'the cell ran'")
    message = str(raised.value)
    assert message == (f"--storage {str(journal)!r} already holds 3 trials of study "
                       "'lightning_sweep': pass --resume to continue it, or choose another "
                       "--storage file."), message
    assert "lightning_sweep" not in shell.user_ns
    assert len(optuna.load_study(study_name="lightning_sweep", storage=storage).trials) == 3


def test_a_crashed_trials_devices_go_to_the_next_trial(shell, no_orphans):
    import os

    # one core: one slot, so trial 1 can start only on the devices trial 0 crashed on
    cores = os.sched_getaffinity(0)
    cell = CELL.replace("model = Regressor(", "model = (Exploding if trial.number == 0 "
                                              "else Regressor)(")
    os.sched_setaffinity(0, {min(cores)})
    try:
        done, _ = sweep(shell, "--trials 2", cell, head=SWEEP1)
    finally:
        os.sched_setaffinity(0, cores)
    assert done.slots == 1
    assert [t.status for t in done.trials] == ["failed", "complete"]
    assert "trial exploded" in done.trials[0].run.traceback
    assert done.events == [("started", 0), ("ended", 0), ("started", 1), ("ended", 1)]
    assert done.trials[0].slot == done.trials[1].slot
    assert done.trials[1].run.global_step > 0


def test_maximize_takes_the_trial_with_the_highest_metric_as_the_best(shell):
    done, _ = sweep(shell, "--trials 2 --direction maximize")
    highest = max(done.trials, key=lambda record: record.value)
    assert done.best is highest.run and done.study.best_trial.number == highest.number
    assert shell.user_ns["model"] is highest.model
