"""What a clean clone holds: no symbolic link (a committed `.venv` link to one engineer's virtualenv
made a fresh clone's `make run` fail with "Unable to create directory .venv") and nothing of the
local state that `.gitignore` keeps out (`.venv`, `var/`, test artifacts)."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_clone_holds_no_symlink_and_no_local_state() -> None:
    staged = subprocess.run(
        ["git", "ls-files", "--stage"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    paths = {line.split("\t", 1)[1]: line.split()[0] for line in staged}
    assert [path for path, mode in paths.items() if mode == "120000"] == []  # 120000: a symlink
    local = {".venv", "var", "test-artifacts", ".pytest_cache"}
    assert [path for path in paths if path.split("/")[0] in local] == []
