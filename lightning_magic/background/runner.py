"""A ``--background`` cell: its body runs as in the foreground; each Trainer call takes what it
needs (``leases``), starts its ranks through ``train``'s launcher, and returns a
``BackgroundRun`` at once."""

from __future__ import annotations

from typing import Any

from ..source.editor import cell_number
from .handle import BackgroundRun
from .leases import claim_call
from .runs import RUNS, Runs


class Runner:
    """Runs a Trainer's calls in the background (``Session.runner``); kept by the Trainer, so its
    calls in later cells are background runs too."""

    def __init__(self, shell: Any, runs: Runs, no_wait: bool) -> None:
        self.shell, self.runs, self.no_wait = shell, runs, no_wait
        self.started: list[BackgroundRun] = []

    def __call__(self, launcher: Any, function: Any, args: Any, kwargs: Any,
                 trainer: Any) -> BackgroundRun:
        claim_call(launcher, trainer, self.runs, self.no_wait)
        launch, given = launcher.begin(trainer, args, kwargs)
        run = BackgroundRun(launcher, launch, trainer, given, cell=cell_number(self.shell))
        try:
            if launcher.session.flags.detach:
                from .detach import start

                ranks, run.detached = None, start(run, function, args, kwargs)
            else:
                ranks = launcher.start_ranks(function, args, kwargs, trainer, launch)
        except BaseException:
            from ..train.launch.supervision import Outcome

            run.discard()
            launcher.outcome = outcome = Outcome(status="interrupted")
            launcher.record = launch.end(outcome, list(launcher.session.kernel_warnings))
            raise
        run.start(function, args, kwargs, ranks)
        self.runs.add(run)
        self.started.append(run)
        launcher.handle = run
        return run


def run_cell(prepared: Any, shell: Any) -> Any:
    """The cell's value: its last fit's ``BackgroundRun`` (also bound to ``--out``), else the
    value of its last line."""
    from .. import train

    runner = Runner(shell, RUNS, prepared.flags.no_wait)
    prepared.runner = runner
    result = train.run(prepared)
    if result.run is not None and not result.run.ok:  # a call that failed before its ranks ran
        from ..train.returns.results import TrainingFailed

        shell.user_ns[prepared.flags.out] = result.run
        raise TrainingFailed(result.run, prepared.flags.out)
    fits = [run for run in runner.started if run.stage == "fit"]
    if runner.started:
        shell.user_ns[prepared.flags.out] = (fits or runner.started)[-1]
    return fits[-1] if fits else result.value
