"""Other people's Lightning code under ``%%lightning_train``: three Lightning-AI/tutorials notebooks
(notebooks/tutorials/) and Lightning's shipped demos (notebooks/demos.ipynb), each executed in a
real kernel under the magic and as plain Lightning (the magic line removed), and what each run
leaves behind compared value by value: every Trainer's metrics, epoch, step, log and checkpoint
paths, every model's weights, every test/validate result and every list of predictions.

Tolerances. Both runs are seeded alike and run one torch thread per process (see
support/tutorials.py), so the same number of processes means the same operations on the same
data in the same order: the values agree to float32 rounding, and any difference that survives
training is a real one. REL allows for rounding only (float32 has about 7 significant digits;
an average over ranks is summed in a different order than one over all items)."""

from __future__ import annotations

import pytest
from support.tutorials import Run, differences, execute

pytestmark = pytest.mark.slow

TUTORIALS = ["tutorials/mnist-hello-world.ipynb", "tutorials/basic-gan.ipynb",
             "tutorials/datamodules.ipynb"]
ALL = TUTORIALS + ["demos.ipynb"]
REL, ABS = 1e-5, 1e-7

# What plain ddp_notebook cannot do in a notebook, by Lightning's own design, that the magic does:
# a second fit on the same Trainer ("Calling `trainer.fit()` twice on the same Trainer instance
# using a spawn-based strategy is not supported"), and whatever a later cell reads of it.
PLAIN_DDP_LIMITS = {
    "tutorials/mnist-hello-world.ipynb": ("Calling `trainer.fit()` twice", "metrics.csv"),
}



class Runs:
    """Each (notebook, mode, devices) executed once for the whole module, when first asked for."""

    def __init__(self, root):
        self.root = root
        self.done: dict[tuple, Run] = {}

    def get(self, name: str, mode: str, devices: int | None = None) -> Run:
        key = (name, mode, devices)
        if key not in self.done:
            folder = self.root / f"{name.replace('/', '-')}-{mode}-{devices or 'as-written'}"
            self.done[key] = execute(name, mode, folder, devices)
        return self.done[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("tutorials"))


def assert_ran_clean(run: Run):
    assert run.left, f"{run.name} ({run.mode}) did not reach its last cell"
    assert not run.errors, f"{run.name} ({run.mode}):\n" + "\n".join(run.errors)


@pytest.mark.parametrize("name", ALL)
def test_one_process_matches_plain_lightning(kernel_env, runs, name):
    """--devices 1 under the magic leaves exactly what plain Lightning leaves in one process:
    metrics, epochs, steps, log and checkpoint folders, weights, test results, predictions."""
    plain = runs.get(name, "plain", 1)
    assert_ran_clean(plain)
    magic = runs.get(name, "magic", 1)
    assert_ran_clean(magic)
    found = differences(magic.left, plain.left, REL, ABS)
    assert not found, f"{name}, one process:\n" + "\n".join(found[:40])


@pytest.mark.parametrize("name", ALL)
def test_two_ranks_match_plain_ddp_notebook(kernel_env, runs, name):
    """As written (--devices 2) the magic trains, tests and validates like plain Lightning's
    ddp_notebook with two processes: the same weights and the same test/validate results.
    Plain ddp_notebook restores neither epoch nor step counters into the notebook's Trainer and
    returns no predictions; those are compared with one process in the other tests."""
    magic = runs.get(name, "magic")
    assert_ran_clean(magic)
    plain = runs.get(name, "plain")
    assert plain.left, f"{name}: plain ddp_notebook did not reach its last cell"
    allowed = PLAIN_DDP_LIMITS.get(name, ())
    unexpected = [e for e in plain.errors if not any(limit in e for limit in allowed)]
    assert not unexpected, f"{name}, plain ddp_notebook:\n" + "\n".join(unexpected)
    for part in ("models", "values"):
        found = differences(magic.left[part], plain.left[part], REL, ABS, part)
        assert not found, f"{name}, two ranks:\n" + "\n".join(found[:40])
    for trainer, state in plain.left["trainers"].items():
        if not plain.errors:
            # plain ddp_notebook merges each call's metrics into the last ones; one process (and
            # the magic) keep the last call's only: compare what the magic kept
            kept = magic.left["trainers"][trainer]["callback_metrics"]
            found = differences(kept, {k: v for k, v in state["callback_metrics"].items()
                                       if k in kept}, REL, ABS, trainer)
            assert not found, f"{name}, two ranks:\n" + "\n".join(found)


def test_predict_on_two_ranks_is_single_process_predict(kernel_env, runs):
    """Two ranks predict every item of the predict set once, in the set's order, and test the
    same weights to the same loss as one process of plain Lightning."""
    magic = runs.get("demos.ipynb", "magic")
    assert_ran_clean(magic)
    plain = runs.get("demos.ipynb", "plain", 1)
    assert_ran_clean(plain)
    predictions = magic.left["predictions"]["predictions"]
    assert len(predictions) == 64  # BoringDataModule's predict set: 64 items, batches of one
    assert not differences(predictions, plain.left["predictions"]["predictions"], REL, ABS)
    assert predictions != predictions[::-1]  # the order is a real one: items differ
    found = differences(magic.left["results"]["fresh_test"], plain.left["results"]["fresh_test"],
                        REL, ABS, "fresh_test")
    assert not found, "\n".join(found)
    assert set(magic.left["results"]["fresh_test"][0]) == {"test_loss"}
