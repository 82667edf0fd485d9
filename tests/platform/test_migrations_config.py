"""`studio migrate` takes any valid DATABASE_URL, also one with percent-encoded parts."""

from shared.migrations import alembic_config


def test_migrations_take_a_percent_encoded_database_url():
    url = "postgresql+psycopg://studio:p%40ss%25word@/studio?host=%2Fvar%2Frun%2Fpostgresql"
    assert alembic_config(url).get_main_option("sqlalchemy.url") == url
