"""Open a leaderboard site in a real headless Chromium and report what the page rendered."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (Debian: apt-get install chromium; `make install` does it when run as root)",
)

_PROBE = """
<script>
window.addEventListener("load", () => {
  const out = {
    images: [...document.images].map(i => ({id: i.id, w: i.naturalWidth, h: i.naturalHeight, shown: i.getBoundingClientRect().width})),
    tables: [...document.querySelectorAll("table")].map(t => ({id: t.id, rows: t.tBodies[0].rows.length,
             headers: [...t.tHead.rows[0].cells].map(c => c.textContent), width: t.getBoundingClientRect().width})),
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def probe_site(site: Path, profile: Path) -> tuple[dict[str, Any], str]:
    """Load ``site/index.html`` (plus a probe script) and return (images/tables found, the final DOM)."""
    probe = site / "probe.html"
    probe.write_text((site / "index.html").read_text().replace("</body>", _PROBE + "</body>"))
    result = chromium(["--dump-dom", probe.as_uri()], profile)
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert match, f"probe did not run; DOM starts: {result.stdout[:500]}"
    found: dict[str, Any] = json.loads(html.unescape(match.group(1)))
    return found, result.stdout
