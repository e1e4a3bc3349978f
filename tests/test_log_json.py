"""The daemon's output is JSON lines and nothing else: the real bitharbord (every service: watchfiles, MiniLM,
the diskann backend's C++ build and load) ingests a dropped file and answers a search; every line it wrote on
stdout and stderr is a JSON object with an `event`. What native code prints is in STATE/native.log."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.media import make_jpeg

REPO = Path(__file__).resolve().parents[1]
CONFIG = """apiVersion: bitharbor/v1
paths: {media_root: /box/media, index_root: /box/index, config_root: /box/config}
library:
  watch:
    - {path: /box/inbox, type: personal}
index: {backend: diskann, rebuild_threshold: 1}
reconcile: {interval: 2}
"""


def json_lines(path: Path) -> list[dict[str, object]]:
    events = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"{path.name}:{n} is not JSON: {line[:300]!r}") from None
        assert isinstance(event, dict) and "event" in event, f"{path.name}:{n} has no event: {line[:300]!r}"
        events.append(event)
    return events


def graph_built(err: Path) -> bool:
    """The search service installed a diskann graph of all 70 rows (its C++ has printed by then)."""
    return any('"index.installed"' in line and '"rows": 70' in line for line in err.read_text().splitlines())


def test_daemon_output_is_only_json_lines(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "harbor.yaml").write_text(CONFIG)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    sock = state / "bitharbord.sock"
    proc = subprocess.Popen([sys.executable, "-m", "bitharbord", "--state-dir", str(state), "--http", "off"],
                            stdout=out.open("wb"), stderr=err.open("wb"), cwd=REPO)

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bitharborctl", "--socket", str(sock), *args],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        inbox = state / "root" / "box" / "inbox"
        deadline = time.monotonic() + 60
        while not inbox.is_dir():
            assert time.monotonic() < deadline, "the inbox was never created"
            time.sleep(0.1)
        for i in range(70):  # enough for a real diskann graph (smaller indexes are searched exactly)
            make_jpeg(inbox / f"photo{i:02d}.jpg", color=(i * 3, 255 - i * 3, 90), size=(32, 24))
        found: list[object] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (len(found) == 10 and graph_built(err)):
            time.sleep(1)
            res = ctl("search", "photo", "-o", "json")
            if res.returncode == 0:
                found = json.loads(res.stdout).get("results") or []
        assert len(found) == 10 and graph_built(err), err.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, err.read_text()[-3000:]
    events = json_lines(out) + json_lines(err)
    names = {e["event"] for e in events}
    assert "native_output.diverted" in names and "library.queued" in names
    native = (state / "native.log").read_text(errors="replace")
    assert native.strip(), "diskann's build and load print to fds 1/2: that text belongs in STATE/native.log"
    # Libraries' standard-logging records are JSON too, named by their logger; watchfiles' chatter is debug.
    assert not [e for e in events if "change" in str(e["event"]) and "detected" in str(e["event"])]


def test_library_logging_is_json_and_watchfiles_chatter_is_debug() -> None:
    import logging


    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    # Libraries imported by earlier tests in this process may have quietened these loggers (a level, propagate):
    # what is under test is our handler, so they start as a fresh daemon has them.
    names = ("urllib3", "urllib3.connectionpool", "watchfiles", "watchfiles.main")
    saved = {n: (logging.getLogger(n).level, logging.getLogger(n).propagate, logging.getLogger(n).disabled)
             for n in names}
    for n in names:
        lg = logging.getLogger(n)
        lg.setLevel(logging.NOTSET)
        lg.propagate, lg.disabled = True, False
    try:
        _check_library_logging(root, before)
    finally:
        for n, (lvl, prop, dis) in saved.items():
            lg = logging.getLogger(n)
            lg.setLevel(lvl)
            lg.propagate, lg.disabled = prop, dis


def _check_library_logging(root: Any, before: Any) -> None:
    import io
    import logging

    import structlog

    from bitharbord import log

    for level, shown in (("info", False), ("debug", True)):
        out = io.StringIO()
        log.configure(level, stream=out)
        try:
            logging.getLogger("watchfiles.main").info("%d change%s detected", 1, "")
            logging.getLogger("urllib3.connectionpool").warning("Retrying (%r) after connection broken", "Retry")
            structlog.get_logger("bitharbord.test").info("own.event", n=1)
        finally:
            structlog.reset_defaults()
            root.handlers[:], root.level = before
        events = [json.loads(line) for line in out.getvalue().splitlines()]
        by_event = {e["event"]: e for e in events}
        assert by_event["Retrying ('Retry') after connection broken"]["logger"] == "urllib3.connectionpool"
        assert by_event["Retrying ('Retry') after connection broken"]["level"] == "warning"
        assert by_event["own.event"]["n"] == 1
        assert ("1 change detected" in by_event) is shown
        if shown:
            assert by_event["1 change detected"]["level"] == "debug"


def test_stray_prints_become_one_event_a_line() -> None:
    from bitharbord.system.native_output import LineWriter

    lines: list[str] = []
    w = LineWriter(lines.append, "<stdout>")
    print("Loading formatted geocoded file...", file=w)
    w.write("\r 10%|#   |\r 50%|#####|")
    w.flush()  # progress bars flush on every redraw: nothing yet
    w.write("\r100%|##########|\n")
    w.write("no newline at exit")
    assert lines == ["Loading formatted geocoded file...", "100%|##########|"]
    w.close()
    assert lines[-1] == "no newline at exit"
