"""Progress off a terminal: a plain line (done/total, rate, ETA) about every N seconds, none in between."""

from __future__ import annotations

import io

from axwarehouse.progress import Progress
from conftest import axw


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_log_lines_every_interval_with_rate_and_eta():
    clock, out = Clock(), io.StringIO()  # StringIO is not a terminal
    bar = Progress(100, "activations L2", "tok", stream=out, every=30.0, clock=clock)
    clock.now += 29.0
    bar.update(20)
    assert out.getvalue() == ""  # not yet 30 s
    clock.now += 1.0
    bar.update(5)
    assert out.getvalue() == "activations L2: 25/100 tok (25%), 0.8 tok/s, ETA 0:01:30\n"
    clock.now += 10.0
    bar.update(25)
    assert out.getvalue().count("\n") == 1  # 10 s after the last line: nothing
    clock.now += 10.0
    bar.close()  # a stage that printed lines ends with one
    assert out.getvalue().splitlines()[-1] == "activations L2: 50/100 tok (50%), 1.0 tok/s, ETA 0:00:50"


def test_short_stage_and_disabled_print_nothing():
    clock, out = Clock(), io.StringIO()
    with Progress(10, "train", "fit", stream=out, every=30.0, clock=clock) as bar:
        clock.now += 5.0
        bar.update(10)
    off = Progress(10, "train", "fit", stream=out, every=0.0, clock=clock, enabled=False)
    clock.now += 60.0
    off.update(3)
    off.close()
    assert out.getvalue() == ""


def test_a_stage_run_from_a_script_prints_progress_lines(tiny_warehouse, monkeypatch):
    """`axw train` with stderr not a terminal (the test captures it) logs its fits as lines."""
    catalog, args = tiny_warehouse
    monkeypatch.setenv("AXW_PROGRESS_SECONDS", "0")
    code, out, err = axw("--catalog", catalog, "train", "--method", "diffmean", *args)
    assert code == 0, err
    assert "train: 3/3 fit (100%)" in err
    assert "\r" not in err
