"""What a failed attempt shows of its exception (`result.last_error`): a class name, the cause's."""

from collections.abc import Callable

from celery.exceptions import SoftTimeLimitExceeded

from shared.jobs.runner import public_error


def raised(make: Callable[[], None]) -> BaseException:
    try:
        make()
    except BaseException as e:  # noqa: BLE001 - the test looks at whatever was raised
        return e
    raise AssertionError("nothing raised")


def limit() -> None:
    raise SoftTimeLimitExceeded("soft time limit (2 s) exceeded")


def lazy_import() -> None:
    """As transformers' and diffusers' lazy modules do with what an import raised."""
    try:
        limit()
    except Exception as e:
        raise ImportError("Failed to import diffusers.schedulers") from e


def cleanup_failing() -> None:
    try:
        limit()
    except Exception:
        raise RuntimeError("cleanup failed")  # noqa: B904 - the limit stays as __context__


def test_a_soft_time_limit_a_library_wrapped_is_named_as_the_time_limit() -> None:
    """The limit landed in a lazy import and the job read `last_error: ImportError` (a full run,
    2026-12-07); the operator needs the cause, not the wrapper."""
    assert public_error(raised(lazy_import)) == "SoftTimeLimitExceeded"
    assert public_error(raised(cleanup_failing)) == "SoftTimeLimitExceeded"
    assert public_error(raised(limit)) == "SoftTimeLimitExceeded"


def test_other_errors_show_their_class_only() -> None:
    def leaky() -> None:
        raise ValueError("s3://bucket/users/0b7c/photo.jpg")

    def missing() -> None:
        raise ImportError("no module named x")

    assert public_error(raised(leaky)) == "ValueError"
    assert public_error(raised(missing)) == "ImportError"
