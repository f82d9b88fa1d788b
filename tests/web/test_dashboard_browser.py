"""The dashboard in a real browser while boards are being provisioned: cards appear and move
live without a reload, a failure shows its message, hostile device strings stay text."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from browser_support import chromium, output_dir  # noqa: F401  (fixture)
from dashboard_support import served

from rpiboot.provision.web.state import StationState

HOSTILE_SERIAL = '<img src=x onerror="document.title=\'pwned\'">'
HOSTILE_MESSAGE = "verify mismatch at byte 4096 <script>document.title='pwned'</script>"
TOTAL = 64 * 1024 * 1024


def _wait(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class _Line:
    """Three boards moving through their steps on a thread, as a run's events would."""

    def __init__(self, state: StationState):
        self.state = state
        self.release_failure = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        emit = self.state.apply
        emit({"event": "start", "station": "line1-station-a", "profile": "cm4-lite"})
        for port, chip in (("1-1.1", "BCM2711"), ("1-1.2", "BCM2711"), ("1-1.3", "BCM2712")):
            emit({"event": "board_arrived", "port": port, "chip": chip})
            emit({"event": "step_started", "port": port, "step": "write",
                  "serial": HOSTILE_SERIAL if port == "1-1.2" else f"10000000{port[-1]}abc"})
        written = 0
        while not self.stop.is_set() and written < TOTAL:
            written = min(TOTAL, written + TOTAL // 40)
            for port in ("1-1.1", "1-1.2", "1-1.3"):
                emit({"event": "step_progress", "port": port, "step": "write", "bytes": written,
                      "total": TOTAL, "rate": 31.5e6, "eta": (TOTAL - written) / 31.5e6})
            if self.release_failure.is_set():
                break
            time.sleep(0.15)
        emit({"event": "board_failed", "port": "1-1.2", "step": "verify",
              "code": "verify_mismatch", "message": HOSTILE_MESSAGE, "exit_code": 5})
        emit({"event": "board_done", "port": "1-1.1", "serial": "100000001abc",
              "chip": "BCM2711", "bytes_written": TOTAL, "verified": True, "unit": 42,
              "seconds": 3.0})


def _card(driver: Any, port: str) -> dict[str, str] | None:
    return driver.execute_script("""
        const card = document.querySelector(`.card[data-port="${arguments[0]}"]`);
        if (!card) return null;
        return {cls: card.className, text: card.innerText,
                width: card.querySelector('.progress > div').style.width,
                error: card.querySelector('.error').textContent,
                serial: card.querySelector('.serial').textContent};
    """, port)


def test_cards_update_live_and_show_failures(chromium: Any) -> None:  # noqa: F811
    state = StationState()
    line = _Line(state)
    with served(state) as client:
        chromium.get(client.base + "/")
        chromium.execute_script("window.loadedOnce = true;")
        line.thread.start()
        try:
            _wait(lambda: (_card(chromium, "1-1.3") or {}).get("width", "0%") not in ("", "0%",
                                                                                       "0.0%"),
                  "progress on port 1-1.3")
            first = float(_card(chromium, "1-1.3")["width"].rstrip("%"))
            _wait(lambda: float(_card(chromium, "1-1.3")["width"].rstrip("%")) > first,
                  "the progress bar to move")
            assert "MB/s" in _card(chromium, "1-1.3")["text"]
            assert "ETA" in _card(chromium, "1-1.3")["text"]
            line.release_failure.set()
            failed = _wait(lambda: (c := _card(chromium, "1-1.2")) and "failed" in c["cls"] and c,
                           "the failed card")
            assert failed["error"] == f"verify_mismatch: {HOSTILE_MESSAGE}"
            assert failed["serial"] == f"serial {HOSTILE_SERIAL}"
            done = _wait(lambda: (c := _card(chromium, "1-1.1")) and " ok" in c["cls"] and c,
                         "the finished card")
            assert "unit 42" in done["text"] and done["width"] == "100%"
            assert chromium.execute_script("return window.loadedOnce") is True  # no reload
            assert chromium.execute_script("return document.querySelectorAll('img').length") == 0
            assert chromium.title == "rpiboot station"
            assert chromium.find_element("id", "live").text == "live"
            tiles = chromium.find_element("id", "run-totals").text
            assert tiles == "1 ok · 1 failed · 1 in progress"
            assert "verify_mismatch × 1" in chromium.find_element("id", "failures").text
            shot = output_dir() / "dashboard.png"
            assert chromium.save_screenshot(str(shot))
            print(f"screenshot: {shot}")
        finally:
            line.stop.set()
            line.thread.join(timeout=5)
