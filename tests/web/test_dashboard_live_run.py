"""The dashboard of a real run: `rpiboot-provision run --web` through the installed command and
real libusb, against virtual boards behind umockdev, watched in headless Chromium while it runs.

One board has a disk too small for the image, so a failure with its message must show; one
board reports a serial made of HTML, which must show as text.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from browser_support import chromium, output_dir  # noqa: F401  (fixture)

from rpiboot.simulator import umockdev_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "umockdev"))
from umockdev_support import SIZES, blob, unavailable  # noqa: E402

pytest.importorskip("uvicorn", reason="the dashboard needs the [line] extra")
HOSTILE_SERIAL = "<b>x</b>"
URL_LINE = re.compile(r"station dashboard at (http://\S+)")
# Records every text the cards' badges and errors take, so the test sees the steps go by even
# when they are quicker than its polling.
OBSERVER = """
window.seen = {};
new MutationObserver(() => {
  for (const card of document.querySelectorAll('.card')) {
    const list = window.seen[card.dataset.port] = window.seen[card.dataset.port] || [];
    const badge = card.querySelector('.badge').textContent;
    if (list[list.length - 1] !== badge) list.push(badge);
  }
}).observe(document.getElementById('ports'), {subtree: true, childList: true,
                                               characterData: true});
window.loadedOnce = true;
"""


def _provision_command() -> list[str]:
    beside = Path(sys.executable).with_name("rpiboot-provision")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "rpiboot.provision.cli"]


def _scenario(tmp_path: Path) -> Path:
    big, small = 24 << 20, 1 << 20
    pis = [{"chip": "2711", "port": "1-1", "serial": "10000001",
            "disks": [{"size": big, "file": str(tmp_path / "disk1.img")}]},
           {"chip": "2712", "port": "1-2", "serial": HOSTILE_SERIAL,
            "disks": [{"size": big, "file": str(tmp_path / "disk2.img")}]},
           {"chip": "2711", "port": "1-3", "serial": "10000003",
            "disks": [{"size": small, "file": str(tmp_path / "disk3.img")}]}]
    for pi in pis:
        pi["arrive"] = 2.0  # after the page is open: it sees them come
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"pis": pis}))
    return path


def _profile(tmp_path: Path) -> Path:
    boot = tmp_path / "boot"
    boot.mkdir()
    for name in SIZES:
        (boot / name).write_bytes(blob(name))
    image = b"".join(blob(f"os-{n}", 256 * 1024) + bytes(256 * 1024) for n in range(16))
    (tmp_path / "os.img.xz").write_bytes(lzma.compress(image, preset=1))
    profile = tmp_path / "line.toml"
    profile.write_text(f'[boot]\ndirectory = "{boot}"\n[os]\nimage = "os.img.xz"\n')
    return profile


def _cards(driver: Any) -> dict[str, dict[str, str]]:
    return driver.execute_script("""
        const out = {};
        for (const card of document.querySelectorAll('.card')) {
          out[card.dataset.port] = {cls: card.className, error: card.querySelector('.error').textContent,
                                    serial: card.querySelector('.serial').textContent};
        }
        return out;""")


def test_a_real_run_seen_in_the_browser(chromium: Any, tmp_path: Path) -> None:  # noqa: F811
    try:
        umockdev_cli.check()
    except umockdev_cli.Unavailable as error:
        unavailable(str(error))
    command = [sys.executable, "-m", "rpiboot.simulator.umockdev_cli", "--scenario",
               str(_scenario(tmp_path)), "--command-timeout", "120", "--",
               *_provision_command(), "run", str(_profile(tmp_path)), "--plain", "-l",
               "--timeout", "6", "--gather", "1", "--ledger", str(tmp_path / "ledger.sqlite"),
               "--libusb", "system", "--station", "bench-7", "--web", "127.0.0.1:0"]
    env = {key: value for key, value in os.environ.items() if key != "RPIBOOT_LIBUSB"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        url = _dashboard_url(process)
        chromium.get(url)
        chromium.execute_script(OBSERVER)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            cards = _cards(chromium)
            if len(cards) == 3 and all(" active" not in c["cls"] for c in cards.values()):
                break
            time.sleep(0.2)
        cards = _cards(chromium)
        shot = output_dir() / "dashboard-live-run.png"
        chromium.save_screenshot(str(shot))
        assert sorted(cards) == ["1-1", "1-2", "1-3"], cards
        assert "ok" in cards["1-1"]["cls"].split() and "ok" in cards["1-2"]["cls"].split()
        assert "failed" in cards["1-3"]["cls"].split(), cards
        assert cards["1-3"]["error"].startswith("image_too_large"), cards["1-3"]
        assert cards["1-2"]["serial"] == f"serial {HOSTILE_SERIAL}"
        assert chromium.execute_script("return document.querySelectorAll('.card b').length") == 0
        seen = chromium.execute_script("return window.seen")
        assert seen["1-1"][-1] == "done" and len(seen["1-1"]) >= 2, seen  # moved live
        assert chromium.execute_script("return window.loadedOnce") is True
        assert chromium.find_element("id", "station").text == "bench-7"
        rows = chromium.find_elements("css selector", "#boards tr")
        assert len(rows) == 3, [r.text for r in rows]  # the ledger's last boards
    finally:
        process.terminate()
        out, err = process.communicate(timeout=60)
    assert "Traceback" not in err, err


def _dashboard_url(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        found = URL_LINE.search(line)
        if found:
            return found.group(1)
    raise AssertionError("no dashboard address printed:\n" + "".join(lines))
