"""`.ci/system-deps` read as a user's machine would run it: it installs, and never stops what it did not start."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "system-deps"


def test_system_deps_never_kills_or_stops_processes() -> None:
    code = "\n".join(
        line for line in SCRIPT.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")
    )
    for command in ("pkill", "killall", "kill ", "systemctl stop", "service ", "--now"):
        assert command not in code, f".ci/system-deps runs {command.strip()!r}: it must not stop processes"


def test_system_deps_keeps_the_packages_services_from_starting() -> None:
    code = SCRIPT.read_text(encoding="utf-8")
    assert "/usr/sbin/policy-rc.d" in code and "exit 101" in code
    assert re.search(r"trap restore_policy EXIT", code), "the policy must be removed (or the old one restored)"
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
