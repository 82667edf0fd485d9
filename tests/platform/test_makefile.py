"""The Makefile's install stamp: `make run`/`make test` reinstall when the pins change, not when
file times do (a fresh clone's files are all new)."""

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def up_to_date(folder: Path) -> bool:
    """`make -q install`: 0 when nothing would run (GNU make's question mode)."""
    return subprocess.run(["make", "-q", "install"], cwd=folder, capture_output=True).returncode == 0


def test_the_install_stamp_follows_the_pins_not_the_file_times(tmp_path: Path) -> None:
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    pins = (tmp_path / "pyproject.toml").read_bytes() + (tmp_path / "constraints.txt").read_bytes()
    stamp = tmp_path / ".venv" / f".installed-{hashlib.sha256(pins).hexdigest()[:16]}"
    assert not up_to_date(tmp_path)  # nothing installed yet
    stamp.parent.mkdir()
    stamp.touch()
    assert up_to_date(tmp_path)
    time.sleep(1.1)
    (tmp_path / "pyproject.toml").touch()  # a fresh clone, a checkout: newer files, same pins
    assert up_to_date(tmp_path)
    with (tmp_path / "constraints.txt").open("a") as f:
        f.write("# a changed pin\n")
    assert not up_to_date(tmp_path)
