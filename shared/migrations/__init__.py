"""Alembic migrations. `studio migrate` (or `upgrade_head()`) brings a database to the latest schema."""

from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.config import get_settings

HERE = Path(__file__).parent


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    # Alembic's config is a ConfigParser: a percent-encoded URL (a password, a socket path) needs %%.
    url = database_url or get_settings().database_url
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_head(database_url: str | None = None) -> None:
    command.upgrade(alembic_config(database_url), "head")
