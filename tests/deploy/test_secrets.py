"""No secret literal is committed under deploy/ or in the Dockerfiles."""

import math
import re
import subprocess
from collections import Counter
from pathlib import Path

from .conftest import REPO

PLACEHOLDER = re.compile(r"CHANGE-ME|\$\{[A-Z_]+\}|<[a-z-]+>|example", re.IGNORECASE)
SECRET_KEY_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY)", re.IGNORECASE)
ASSIGNMENT = re.compile(r"^\s*-?\s*([A-Za-z_][\w.-]*)\s*[=:]\s*[\"']?([^\"'\s#]+)", re.MULTILINE)
URL_PASSWORD = re.compile(r"://[^/\s:@]*:([^@\s/]+)@")
KNOWN_FORMATS = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|ghp_\w{20,}")
TOKEN = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")
# Not secrets: references to keys or objects that hold them, and image digests.
ALLOWED_VALUES = re.compile(r"^(studio-secrets|password|true|false|\d+|sha256:[0-9a-f]{64}|\{.*)$")


def entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def secret_literals(text: str) -> list[str]:
    """Values that look like real credentials: known formats, passwords, random-looking tokens."""
    found = KNOWN_FORMATS.findall(text)
    found += [p for p in URL_PASSWORD.findall(text) if not PLACEHOLDER.search(p)]
    for key, value in ASSIGNMENT.findall(text):
        if SECRET_KEY_NAME.search(key) and not (PLACEHOLDER.search(value) or ALLOWED_VALUES.match(value)):
            found.append(f"{key}={value}")
    for token in TOKEN.findall(text):
        mixed = sum(
            map(bool, (re.search(r"[a-z]", token), re.search(r"[A-Z]", token), re.search(r"\d", token)))
        )
        if mixed == 3 and entropy(token) > 4.0 and not ALLOWED_VALUES.match(token):
            found.append(token)
    return found


def committed_files() -> list[Path]:
    """Files git would commit (a git-ignored local secrets.env is the operator's business)."""
    listed = subprocess.run(
        [
            "git",
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "deploy",
            "services",
            ".dockerignore",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    paths = [REPO / p for p in listed if p.startswith("deploy/") or p.endswith("Dockerfile")]
    return [p for p in paths if p.is_file()]


def test_no_secret_literals_are_committed():
    hits = {str(p.relative_to(REPO)): secret_literals(p.read_text()) for p in committed_files()}
    assert not {path: found for path, found in hits.items() if found}


def test_the_scanner_finds_secrets():
    """Guards the check above against a scanner that never fires."""
    assert secret_literals("SECRET_KEY=hunter2hunter2")
    assert secret_literals("  S3_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'")
    assert secret_literals("DATABASE_URL=postgresql://studio:s3cr3t-pw@db:5432/studio")
    assert secret_literals("token: Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MGFiY2RlZkdISUpL")
    assert secret_literals("aws: AKIAIOSFODNN7EXAMPLE")
    assert not secret_literals("SECRET_KEY=CHANGE-ME\nsecretRef: {name: studio-secrets}")
    assert not secret_literals("REDIS_URL=redis://:CHANGE-ME@redis:6379/0")
