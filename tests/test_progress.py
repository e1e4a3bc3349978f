"""bitharborctl's progress: the views as pure functions of successive snapshots (one plain line per step in a
pipe, a rich bar on a terminal), and the snapshots `ingest --wait` and `queue --watch` make of the daemon's
GET /v1/ingest documents."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from bitharborctl.commands.verify import snapshot as verify_snapshot
from bitharborctl.follow import queue_snapshot
from bitharborctl.progress import PlainView, RichView, Snapshot, open_view

CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # anything but a newline


def files(t: float, done: int, total: int = 100, **kw: object) -> Snapshot:
    return Snapshot(t=t, label="ingest", step="ingest", done=done, total=total, unit="files", **kw)  # type: ignore[arg-type]


def plain(snaps: list[Snapshot]) -> list[str]:
    out = io.StringIO()
    view = PlainView(out)
    for s in snaps:
        view.update(s)
    view.close()
    text = out.getvalue()
    assert not CONTROL.search(text), repr(text)
    return text.splitlines()


def test_plain_one_line_per_step_and_tenth_with_rate_and_eta_from_the_snapshots() -> None:
    lines = plain([files(0, 0), files(1, 2), files(2, 4), files(10, 20), files(11, 22), files(20, 40)])
    assert lines == [
        "ingest [............................]   0% 0/100 files",
        "ingest [#####.......................]  20% 20/100 files 2.0 files/s ETA 0:40",  # 20 files in 10 s
        "ingest [###########.................]  40% 40/100 files 2.0 files/s ETA 0:30",
    ]


def test_plain_prints_the_last_state_at_close_and_a_new_step_at_once() -> None:
    lines = plain([files(0, 0, 10), files(5, 10, 10)])
    assert lines[-1] == "ingest [############################] 100% 10/10 files 2.0 files/s"
    steps = [Snapshot(t=i, label=f"verify #1 [{i + 1}/3] {name}", step=name, done=0, total=None, unit="B")
             for i, name in enumerate(["database", "items", "database"])]
    steps.append(Snapshot(t=3, label="verify #1 [3/3] items", step="items", done=0, total=None, unit="B"))
    assert plain(steps) == ["verify #1 [1/3] database", "verify #1 [2/3] items", "verify #1 [3/3] database",
                            "verify #1 [3/3] items"]
    # within a step, no line until another tenth is done or a minute passed with progress
    assert len(plain([files(0, 0, 1000), *(files(t, t, 1000) for t in range(1, 60))])) == 1 + 1  # +close
    beat = plain([files(0, 0, 1000), files(30, 30, 1000), files(61, 61, 1000)])
    assert "  6% 61/1000 files 1.0 files/s" in beat[1] and len(beat) == 2  # the line at 30 s waited


def test_plain_uses_the_daemons_rate_eta_and_note() -> None:
    run = {"id": 7, "steps": ["database", "blobs"], "step": "blobs", "step_index": 2, "bytes_done": 500_000_000,
           "bytes_total": 1_000_000_000, "rate_bytes_per_s": 25e6, "eta_s": 20.0}
    (line,) = plain([verify_snapshot(run, 0.0)])
    assert line == ("verify #7 [2/2] blobs [##############..............]  50% 500.0 MB/1000.0 MB 25.0 MB/s "
                    "ETA 0:20")
    (line,) = plain([files(0, 3, rate=0.6, eta=3725.0, note="bound by preview")])
    assert line.endswith("3/100 files 0.6 files/s ETA 1:02:05 (bound by preview)")


def test_rich_bar_on_a_terminal_from_the_snapshots() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    view = RichView(out, console=console)
    for snap in (files(0, 0), files(2, 10), files(4, 20, note="bound by preview")):
        view.update(snap)
    view.close()
    text = out.getvalue()
    assert "\x1b[" in text or "\r" in text  # drawn in place
    final = text.split("\r")[-1]
    assert "ingest" in final and "20%" in final and "20/100 files 5.0 files/s ETA 0:16 (bound by preview)" in final


def test_open_view_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert isinstance(open_view(Tty()), RichView)
    assert isinstance(open_view(io.StringIO()), PlainView)  # a pipe
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(open_view(Tty()), PlainView)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("NO_COLOR", "1")
    bar = open_view(Tty())
    assert isinstance(bar, RichView) and bar.console.no_color


def test_queue_snapshot_counts_what_finished_since_the_watch_began() -> None:
    start_doc = {"depth": 1600, "totals": {"queued": 600, "cataloged": 1000, "done": 400}, "eta_s": None,
                 "rate_per_s": 0.0, "running": True}
    start = 400
    later = {"depth": 1564, "totals": {"cataloged": 1564, "done": 436}, "eta_s": 2606.7, "eta_bound_by": "preview",
             "rate_per_s": 0.6, "running": True}
    assert queue_snapshot(0, start, start_doc).done == 0
    snap = queue_snapshot(60, start, later)
    assert (snap.done, snap.total, snap.rate, snap.eta, snap.note) == (36, 1600, 0.6, 2606.7, "bound by preview")
    (line,) = plain([snap])
    assert line.endswith("36/1600 files 0.6 files/s ETA 43:26 (bound by preview)")
    stuck = queue_snapshot(61, start, {**later, "eta_s": None})
    assert stuck.note == "preview finished nothing in the last minute"
    paused = queue_snapshot(62, start, {**later, "paused": "media storage not ready"})
    assert paused.note == "paused: media storage not ready"
