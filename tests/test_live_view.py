"""The live training view in a real IPython shell: throttled in-place updates through one display
id, the summary replacing the view, the SVG chart (named metrics, epochs, bounded size), the
single updating line of a terminal, and escaping. Displays are captured from the shell's own
display publisher; events are the dicts rank 0 sends, with times and clock chosen by the test."""

from __future__ import annotations

import re
import threading
from html.parser import HTMLParser

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.utils.capture import RichOutput, capture_output

from lightning_magic.view.charts import MAX_POINTS, downsample, series_from_history
from lightning_magic.view.live import (
    LiveView,
    frontend,
    render_chart_svg,
    render_summary_html,
)
from lightning_magic.train.returns.results import TrainingRun

GIB = 1024**3


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def events(epochs: int = 2, batches: int = 10, batch_size: int = 16, world_size: int = 2,
           seconds_per_step: float = 0.5):
    """What rank 0 sends for a run of ``epochs`` x ``batches`` steps, validation each epoch."""
    time, step = 1000.0, 0
    yield {"kind": "start", "time": time, "max_epochs": epochs, "max_steps": None,
           "total_batches": batches, "world_size": world_size, "batch_size": batch_size}
    for epoch in range(epochs):
        for batch in range(batches):
            step += 1
            time += seconds_per_step
            yield {"kind": "step", "time": time, "epoch": epoch, "step": step, "batch": batch,
                   "samples": step * batch_size * world_size,
                   "metrics": {"train_loss": 1.0 / step, "lr": 0.01}}
        yield {"kind": "validation", "time": time, "epoch": epoch, "step": step,
               "metrics": {"val_loss": 1.0 / step + 0.1, "val_acc": step / (epochs * batches)}}
    yield {"kind": "end", "time": time}


def history(epochs: int, batches: int) -> list[dict]:
    """``TrainingRun.history`` rows for the same run."""
    rows = []
    for event in events(epochs, batches):
        if event["kind"] in ("step", "validation"):
            stage = "train" if event["kind"] == "step" else "validation"
            rows.append({"stage": stage, "epoch": event["epoch"], "step": event["step"],
                         **event["metrics"]})
    return rows


def training_run(epochs: int = 2, batches: int = 10, **overrides) -> TrainingRun:
    fields = dict(status="finished", metrics={"train_loss": 0.05, "val_loss": 0.15},
                  history=history(epochs, batches), best_model_path="/runs/a/epoch=1-step=20.ckpt",
                  last_model_path="/runs/a/last.ckpt", elapsed=12.34, devices=2,
                  accelerator="cpu", strategy="ddp_notebook", precision="32-true",
                  num_processes=2, epochs=epochs, global_step=epochs * batches)
    fields.update(overrides)
    return TrainingRun(**fields)


class Tags(HTMLParser):
    """The tag names in a piece of HTML, and its text."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs) -> None:  # noqa: ANN001
        self.tags.add(tag)

    def handle_data(self, data) -> None:  # noqa: ANN001
        self.text.append(data)


def svg_of(markup: str) -> str:
    found = re.search(r"<svg.*</svg>", markup, re.S)
    assert found, "no SVG chart in the view"
    return found.group(0)


class Recorder(CapturingDisplayPublisher):
    """The shell's display publisher, keeping what is published and telling waiters about it."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.changed = threading.Condition()

    def publish(self, *args, **kwargs) -> None:
        with self.changed:
            super().publish(*args, **kwargs)
            self.changed.notify_all()

    @property
    def shown(self) -> list[RichOutput]:
        return [RichOutput(**output) for output in self.outputs]

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.outputs) >= count, timeout)


@pytest.fixture
def displays(ip, monkeypatch) -> Recorder:
    recorder = Recorder(shell=ip)
    monkeypatch.setattr(ip, "display_pub", recorder)
    return recorder


def html_outputs(captured) -> list[RichOutput]:
    return [o for o in captured.outputs if "text/html" in o.data]


def test_a_notebook_frontend_gets_html_and_a_terminal_gets_text(ip):
    assert frontend(ip) == "text"  # the terminal shell prints displays as text
    with capture_output():
        assert frontend(ip) == "html"  # a frontend that keeps rich outputs


def test_updates_within_the_interval_render_once_into_one_display(ip):
    clock = Clock()
    view = LiveView("Training Regressor", world_size=2, min_interval=60.0, clock=clock)
    sent = list(events())
    with capture_output() as captured:
        view.start()
        assert len(captured.outputs) == 1  # the initial view
        # before rank 0's first event there is no time to show
        assert captured.outputs[0].data["text/plain"] == "starting"
        for event in sent[:12]:            # all within one interval of the initial view
            clock.now += 1.0
            view.update(event)
        assert len(captured.outputs) == 1
        clock.now = 61.0                   # the interval is over: the next event is drawn
        view.update(sent[12])
        assert len(captured.outputs) == 2
        for event in sent[13:16]:
            clock.now += 1.0
            view.update(event)
        assert len(captured.outputs) == 2
        view.finish(None)
    first, second = captured.outputs[0], captured.outputs[1]
    display_id = first.transient["display_id"]
    assert first.update is False
    assert second.update is True and second.transient["display_id"] == display_id
    assert "step 11" in second.data["text/html"]  # the latest state, not the first held back
    assert "step 11" in second.data["text/plain"]


def test_an_update_held_back_is_drawn_when_the_interval_ends(displays):
    view = LiveView("Training Regressor", min_interval=0.05, clock=Clock())  # time stands still
    view.start()
    sent = list(events())
    view.update(sent[0])
    view.update(sent[1])  # held back: no time has passed on the view's clock
    assert len(displays.outputs) == 1
    assert displays.wait_for(2), "the update held back was never drawn"
    view.finish(None)
    assert displays.shown[1].update is True
    assert "step 1" in displays.shown[1].data["text/html"]


def test_the_summary_replaces_the_view_in_place(ip):
    run = training_run()
    view = LiveView("Training Regressor", world_size=2, min_interval=0.0)
    with capture_output() as captured:
        view.start()
        for event in events():
            view.update(event)
        view.finish(run)
        shown = len(captured.outputs)
        view.update({"kind": "step", "time": 2000.0, "epoch": 5, "step": 99, "metrics": {}})
        view.finish(run)
        assert len(captured.outputs) == shown  # nothing after the summary
    outputs = html_outputs(captured)
    ids = {o.transient["display_id"] for o in outputs}
    assert len(ids) == 1, "every render must go to the same display"
    assert all(o.update for o in outputs[1:])
    final = outputs[-1].data
    assert final["text/html"] == render_summary_html(run)
    assert final["text/plain"] == repr(run)


def test_the_live_view_shows_progress_metrics_and_a_chart_of_every_scalar(ip):
    clock = Clock()
    view = LiveView("Training Regressor", world_size=2, min_interval=0.0, clock=clock)
    sent = list(events(epochs=2, batches=10, seconds_per_step=0.5))
    with capture_output() as captured:
        view.start()
        for event in sent[:14]:  # start, 10 steps, validation, 2 steps of epoch 1
            view.update(event)
        view.finish(None)
    markup = html_outputs(captured)[-1].data["text/html"]
    text = " ".join(Tags(markup).text)
    assert "epoch 1/1" in text and "step 12" in text  # Lightning's current_epoch, of 0..1
    assert "60%" in text                          # 12 of 20 batches
    assert "64 samples/s" in text                 # 16 x 2 ranks every half second
    assert "00:06 elapsed" in text and "ETA 00:04" in text
    for name in ("train_loss", "val_loss", "val_acc", "lr"):
        assert name in text
    svg = svg_of(markup)
    chart_text = " ".join(Tags(svg).text)
    for name in ("train_loss", "val_loss", "val_acc", "lr"):
        assert name in chart_text
    # epochs as Lightning names them (a checkpoint's epoch=), from epoch 0
    assert "epoch 0" in chart_text and "epoch 1" in chart_text and "epoch 2" not in chart_text
    assert svg.count("<polyline") >= 2


def test_gpu_readings_are_shown_per_rank(ip):
    view = LiveView("Training Regressor", min_interval=0.0)
    with capture_output() as captured:
        view.start()
        view.update({"kind": "gpu", "time": 1.0, "ranks": [
            {"rank": 0, "index": 3, "utilization": 87, "memory_used": 12 * GIB,
             "memory_total": 80 * GIB},
            {"rank": 1, "index": 5, "utilization": None, "memory_used": None,
             "memory_total": None}]})
        view.finish(None)
    text = " ".join(Tags(html_outputs(captured)[-1].data["text/html"]).text)
    assert "rank 0 · GPU 3" in text and "87%" in text and "12.0 / 80.0 GiB" in text
    assert "rank 1 · GPU 5" in text and "n/a / n/a GiB" in text


def test_unknown_lengths_show_no_percentage_or_eta(ip):
    view = LiveView("Training Regressor", min_interval=0.0)
    with capture_output() as captured:
        view.start()
        view.update({"kind": "start", "time": 0.0, "max_epochs": None, "max_steps": -1,
                     "total_batches": float("inf"), "world_size": 1, "batch_size": None})
        view.update({"kind": "step", "time": 1.0, "epoch": 0, "step": 1, "batch": 0,
                     "samples": None, "metrics": {"loss": float("nan")}})
        view.update({"kind": "step", "time": 2.0, "epoch": 0, "step": 2, "batch": 1,
                     "samples": None, "metrics": {"loss": 0.5}})
        view.finish(None)
    text = " ".join(Tags(html_outputs(captured)[-1].data["text/html"]).text)
    assert "step 2" in text and "1 steps/s" in text
    assert "%" not in text and "ETA" not in text


def test_the_chart_stays_the_same_size_when_the_run_is_ten_times_longer(ip):
    # every series is past its point budget in both runs (validation: one point an epoch)
    short, long = history(epochs=400, batches=2), history(epochs=4000, batches=2)
    short_svg, long_svg = render_chart_svg(short), render_chart_svg(long)
    assert len(long_svg) < 1.1 * len(short_svg)
    for points in re.findall(r"points='([^']*)'", long_svg):
        assert len(points.split()) <= MAX_POINTS

    def live_size(epochs: int) -> int:
        view = LiveView("Training Regressor", min_interval=3600.0, clock=Clock())
        with capture_output() as captured:
            view.start()
            for event in events(epochs=epochs, batches=2):
                view.update(event)
            view.finish(None)
        return len(html_outputs(captured)[-1].data["text/html"])

    assert live_size(4000) < 1.1 * live_size(400)


def test_downsampling_keeps_the_shape_and_the_last_point():
    points = [(float(x), float(x * x)) for x in range(10_000)]
    reduced = downsample(points, 300)
    assert len(reduced) == 300 and reduced[-1] == points[-1]
    assert [x for x, _ in reduced] == sorted(x for x, _ in reduced)
    assert downsample(points[:50], 300) == points[:50]


def test_series_skip_values_that_are_not_finite_numbers():
    series = series_from_history([
        {"stage": "train", "epoch": 0, "step": 1, "loss": 1.0, "acc": float("nan")},
        {"stage": "train", "epoch": 0, "step": 2, "loss": float("inf"), "acc": 0.5, "note": "x"},
        {"stage": "train", "epoch": 0, "step": 3, "loss": 0.25, "flag": True}])
    assert series == {"loss": [(1.0, 1.0), (3.0, 0.25)], "acc": [(2.0, 0.5)]}
    assert render_chart_svg([]) == ""


def test_a_terminal_gets_one_updating_line(ip, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    clock = Clock()
    view = LiveView("Training Regressor", world_size=2, min_interval=60.0, clock=clock)
    sent = list(events())
    with capture_output(display=False) as captured:
        view.start()
        assert captured.stdout == ""  # nothing before the first event
        for event in sent:
            clock.now += 30.0  # two events per interval
            view.update(event)
        view.finish(training_run())
    out = captured.stdout
    assert out.count("\n") == 1 and out.endswith("\n")
    assert out.startswith("\r") and "<div" not in out
    frames = out[:-1].split("\r")[1:]
    assert len(frames) == len(sent) // 2 + 1  # every other event, and the last state at the end
    assert "epoch 1/1 step 20" in frames[-1] and "val_loss=" in frames[-1]


def test_the_terminal_line_fits_the_terminal(ip, monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    view = LiveView("Training Regressor", min_interval=0.0)
    with capture_output(display=False) as captured:
        view.start()
        for event in events():
            view.update(event)
        view.finish(None)
    frames = captured.stdout.rstrip("\n").split("\r")[1:]
    assert len(frames) > 1 and all(len(frame) <= 49 for frame in frames)
    assert frames[-1].rstrip().endswith("…")


def test_modes_none_and_bar_show_only_the_summary(ip):
    for mode in ("none", "bar"):
        view = LiveView("Training Regressor", mode=mode, min_interval=0.0)
        run = training_run()
        with capture_output() as captured:
            view.start()
            for event in events():
                view.update(event)
            assert captured.outputs == []
            view.finish(run)
        assert len(captured.outputs) == 1
        assert captured.outputs[0].data["text/html"] == render_summary_html(run)
    with pytest.raises(ValueError, match="'fancy'"):
        LiveView("Training Regressor", mode="fancy")


def test_events_racing_finish_never_draw_over_the_summary(displays):
    run = training_run()
    view = LiveView("Training Regressor", min_interval=0.0)
    finished = threading.Event()

    def reader() -> None:
        step = 0
        while not finished.is_set():
            step += 1
            view.update({"kind": "step", "time": float(step), "epoch": 0, "step": step,
                         "batch": step, "samples": step, "metrics": {"loss": 1.0 / step}})
        for extra in range(100):
            view.update({"kind": "step", "time": 1e6 + extra, "epoch": 0, "step": 10**6 + extra,
                         "batch": 0, "samples": 0, "metrics": {"loss": 0.1}})

    view.start()
    thread = threading.Thread(target=reader)
    thread.start()
    assert displays.wait_for(5)  # the reader has drawn a few frames
    view.finish(run)
    finished.set()
    thread.join(30)
    assert not thread.is_alive()
    assert displays.shown[-1].data["text/html"] == render_summary_html(run)


def test_everything_shown_is_escaped(ip):
    hostile = "<img src=x onerror=alert(1)>"
    view = LiveView(f"Training {hostile}", min_interval=0.0)
    run = training_run(metrics={hostile: 1.0}, best_model_path=f"/runs/{hostile}.ckpt",
                       history=[{"stage": "train", "epoch": 0, "step": 1, hostile: 1.0},
                                {"stage": "train", "epoch": 0, "step": 2, hostile: 0.5}])
    with capture_output() as captured:
        view.start()
        view.update({"kind": "step", "time": 1.0, "epoch": 0, "step": 1, "batch": 0,
                     "samples": 1, "metrics": {hostile: 1.0}})
        view.update({"kind": "gpu", "time": 1.0, "ranks": [
            {"rank": hostile, "index": hostile, "utilization": 1, "memory_used": 1,
             "memory_total": 2}]})
        live = html_outputs(captured)[-1].data["text/html"]
        view.finish(run)
    summary = captured.outputs[-1].data["text/html"]
    for markup in (live, summary):
        assert hostile not in markup
        assert "img" not in Tags(markup).tags and "script" not in Tags(markup).tags
        assert "&lt;img src=x onerror=alert(1)&gt;" in markup


def test_the_summary_shows_the_runs_own_rows_with_epochs_as_lightning_names_them():
    run = training_run(epochs=2, batches=10, max_epochs=2, warnings=["a", "b"])
    text = " ".join(Tags(render_summary_html(run)).text)
    for label, value in run.rows() + run.metric_rows():
        assert label in text and value in text  # one list of rows, for HTML and text alike
        assert any(line.split() == [*label.split(), *value.split()]
                   for line in repr(run).splitlines()), (label, value)
    assert "epoch 1/1 · step 20" in text and "epoch 2" not in text
    assert "2 warnings in lightning_run.warnings" in text


def test_a_check_reads_as_a_check_and_a_stop_as_the_users_choice():
    checked = training_run(status="checked", history=[{"stage": "train", "epoch": 0, "step": 1,
                                                       "train_loss": 0.5}],
                           checks={"world_size": 2, "all_reduce": 2.0, "loss": 0.5})
    markup = render_summary_html(checked)
    assert "check passed" in markup and "nothing was trained" in markup
    assert "<svg" not in markup and "final metrics" not in markup  # no one-dot chart
    stopped = training_run(status="interrupted", epochs=2, max_epochs=80,
                           history=history(3, 10)[:-5])
    markup = render_summary_html(stopped)
    assert "stopped" in markup and "failed" not in markup and "error-color" not in markup
    assert "epoch 2/79" in repr(stopped) and repr(stopped).startswith("TrainingRun stopped")
    from lightning_magic.train.returns.results import TrainingFailed

    shown = TrainingFailed(stopped, "lightning_run")._render_traceback_()[0]
    assert shown.startswith("\x1b[0;34mTraining stopped") and "fail" not in shown.lower()
    stopped.stage = "test"
    shown = TrainingFailed(stopped, "lightning_run")._render_traceback_()[0]
    assert shown.startswith("\x1b[0;34mTesting stopped") and "--resume" not in shown


def carried(sent):
    """Events as rank 0 really sends them: a step event carries every metric Lightning holds in
    ``callback_metrics``, the last validation's values too, until the next validation."""
    held = {}
    for event in sent:
        if event["kind"] in ("step", "validation"):
            held.update(event["metrics"])
            event = dict(event, metrics=dict(held))
        yield event


def polyline_vertices(svg: str, name: str) -> int:
    panel = next(p for p in svg.split("</svg>") if f"<title>{name}</title>" in p)
    points = re.search(r"<polyline points='([^']*)'", panel)
    return len(points.group(1).split()) if points else 1


def test_the_live_chart_is_drawn_as_the_final_one_is(ip):
    """A validation metric held between validations was charted live at every step event: a
    staircase, while the summary's chart draws one point per validation joined by lines."""
    clock = Clock()
    view = LiveView("Training Regressor", world_size=2, min_interval=0.0, clock=clock)
    with capture_output() as captured:
        view.start()
        for event in carried(events(epochs=3, batches=10)):
            view.update(event)
        live = svg_of(html_outputs(captured)[-1].data["text/html"])
        view.close()
    final = render_chart_svg(history(3, 10))
    for name in ("val_loss", "val_acc", "train_loss"):
        assert polyline_vertices(live, name) == polyline_vertices(final, name), name
    assert polyline_vertices(live, "val_loss") == 3  # one point a validation


def logged_on_epoch(epochs: int = 3, batches: int = 10, values=(0.9, 0.4, 0.6)):
    """(events, history) of a module that logs ``epoch_loss`` on epoch only (``on_step=False,
    on_epoch=True``), ``train_loss`` on step and ``val_loss`` each epoch, as rank 0 sends them:
    step events carry ``callback_metrics``, where an epoch's ``epoch_loss`` is once the epoch
    ended, so the first step event after that (the next epoch's first, or the one at the end of
    training) brings it and the later ones carry it on unchanged. The history rows are those of
    the same run: an ``epoch`` row per epoch, at the step it ended."""
    sent = [{"kind": "start", "time": 0.0, "max_epochs": epochs, "total_batches": batches,
             "world_size": 1, "batch_size": 8}]
    rows, held, step = [], {}, 0
    for epoch in range(epochs):
        for batch in range(batches):
            step += 1
            held["train_loss"] = 1.0 / step
            sent.append({"kind": "step", "time": float(step), "epoch": epoch, "step": step,
                         "batch": batch, "samples": 8 * step, "metrics": dict(held)})
            rows.append({"stage": "train", "epoch": epoch, "step": step,
                         "train_loss": held["train_loss"]})
        held["val_loss"] = 0.5 / (epoch + 1)
        sent.append({"kind": "validation", "time": float(step), "epoch": epoch, "step": step,
                     "metrics": dict(held)})
        rows.append({"stage": "validation", "epoch": epoch, "step": step,
                     "val_loss": held["val_loss"]})
        held["epoch_loss"] = values[epoch]
        rows.append({"stage": "epoch", "epoch": epoch, "step": step, "epoch_loss": values[epoch]})
    sent.append({"kind": "step", "time": float(step), "epoch": epochs, "step": step,
                 "batch": None, "samples": 8 * step, "metrics": dict(held)})
    sent.append({"kind": "end", "time": float(step)})
    return sent, rows


def chart_of(svg: str, name: str) -> str:
    return next(p for p in svg.split("</svg>") if f"<title>{name}</title>" in p)


def test_a_metric_logged_on_epoch_is_drawn_live_as_in_the_final_chart(ip):
    """A value logged on epoch only was charted live at every step event that carried it: a
    staircase, where the summary's chart joins one point an epoch, at the step the epoch ended."""
    sent, rows = logged_on_epoch()
    view = LiveView("Training Regressor", min_interval=0.0, clock=Clock())
    with capture_output() as captured:
        view.start()
        for event in sent:
            view.update(event)
            if (event.get("epoch"), event.get("batch")) == (2, 4):  # two epochs ended so far
                during = svg_of(html_outputs(captured)[-1].data["text/html"])
        live = svg_of(html_outputs(captured)[-1].data["text/html"])
        view.close()
    final = render_chart_svg(rows)
    assert chart_of(live, "epoch_loss") == chart_of(final, "epoch_loss")  # the same chart
    assert polyline_vertices(final, "epoch_loss") == 3  # one point an epoch
    assert chart_of(final, "epoch_loss").count("<circle") == 3
    for name in ("train_loss", "val_loss"):
        assert polyline_vertices(live, name) == polyline_vertices(final, name), name
    assert polyline_vertices(during, "epoch_loss") == 2  # one point an epoch, never a step
