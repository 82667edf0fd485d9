"""What a deployment relies on before any request: production refuses the development placeholder
secrets at start, and the migrations build exactly the schema the models describe."""

import subprocess
import sys
import uuid
import warnings

import httpx
import jwt
import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, pool, text

from shared.config import PLACEHOLDER_SECRET, Settings, get_settings
from shared.localstack import LocalStack, free_port, wait_for_port
from tests.conftest import REPO, _child_env

REAL = {
    "SECRET_KEY": "a-real-secret-" + "x" * 32,
    "S3_ACCESS_KEY_ID": "AKIAREALKEY" + "Z" * 9,
    "S3_SECRET_ACCESS_KEY": "a-real-s3-secret-" + "y" * 24,
}


@pytest.mark.parametrize(
    ("placeholder", "command"),
    [
        ("SECRET_KEY", ["gateway", "--port", "{port}"]),
        ("S3_ACCESS_KEY_ID", ["gateway", "--port", "{port}"]),
        ("S3_SECRET_ACCESS_KEY", ["worker", "photos"]),
        ("SECRET_KEY", ["migrate"]),
    ],
)
def test_production_refuses_placeholder_secrets_at_start(stack: LocalStack, placeholder, command):
    env = {**_child_env(), **REAL, "ENVIRONMENT": "production"}
    env[placeholder] = Settings.model_fields[placeholder.lower()].default  # the development default
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", *(arg.format(port=free_port()) for arg in command)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a process that starts anyway never exits: the run fails
    )
    assert done.returncode != 0
    assert f"{placeholder} still has the development placeholder" in done.stderr, done.stderr[-2000:]
    for name, value in REAL.items():  # the error names the variable, never prints a value
        assert value[-8:] not in done.stderr + done.stdout, f"{name}'s value was printed"


def test_a_refused_setting_names_the_variable_and_never_prints_a_value():
    """pydantic prints the input of a failed model validator (every setting: secrets too) unless
    `hide_input_in_errors` is set."""
    with pytest.raises(ValidationError) as refused:
        Settings(
            _env_file=None,
            environment="production",
            s3_access_key_id=REAL["S3_ACCESS_KEY_ID"],
            s3_secret_access_key=PLACEHOLDER_SECRET,
            secret_key="a-real-secret-kept-out-of-logs",  # last: the tail of pydantic's input repr
        )
    text = str(refused.value)
    assert "S3_SECRET_ACCESS_KEY still has the development placeholder" in text, text
    assert "out-of-logs" not in text and REAL["S3_ACCESS_KEY_ID"] not in text, text


def test_production_starts_with_real_secrets(stack: LocalStack, procs):
    port = free_port()
    procs.start(
        "gateway-production", "gateway", "--port", str(port), env={**REAL, "ENVIRONMENT": "production"}
    )
    wait_for_port(port, timeout=60)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).text == "ok"


def test_migrations_match_the_models(stack: LocalStack):
    """Alembic's autogenerate diff between the models and a database built only by the migrations."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from shared.migrations import upgrade_head
    from shared.models import Base

    name = f"fresh_{uuid.uuid4().hex[:8]}"
    admin = create_engine(get_settings().database_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = get_settings().database_url.replace("/studio?", f"/{name}?", 1)
    assert name in url
    try:
        upgrade_head(url)
        engine = create_engine(url, poolclass=pool.NullPool)
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        engine.dispose()
        assert diff == [], f"the models and the migrations differ: {diff}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_development_secret_signs_tokens_without_a_key_length_warning() -> None:
    """RFC 7518 3.2: an HS256 key has 32+ bytes; PyJWT warned on every token `make run` signed."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning becomes an error here
        jwt.encode({"sub": "x"}, PLACEHOLDER_SECRET, algorithm="HS256")
    assert len(PLACEHOLDER_SECRET.encode()) >= 32
