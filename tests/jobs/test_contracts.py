"""The typed contracts between the services (shared/contracts/): one registry of job kinds that
ARCHITECTURE.md's table and the workers agree with, inputs that parse rows already in flight, and
one catalogue sentence per error code in every language."""

import re
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared import i18n
from shared.contracts import (
    KINDS,
    QUEUES,
    CheckPhotos,
    ErrorCode,
    GeneratePortraits,
    SendEmail,
    Template,
    TrainLikeness,
    get_kind,
)
from shared.contracts.likeness_files import LikenessFiles
from shared.jobs.celery_app import QUEUE_MODULES
from shared.jobs.runner import JobError

REPO = Path(__file__).resolve().parents[2]


def _architecture_kinds() -> dict[str, tuple[str, str, str]]:
    """ARCHITECTURE.md's "Job kinds" table: kind -> (task, queue, module file)."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    section = text.split("## Job kinds", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| `([\w.]+)` \| (\w+) \| (\S+\.py)", section, re.M)
    return {kind: (task, queue, path) for kind, task, queue, path in rows}


def test_the_architecture_table_lists_every_kind_as_registered() -> None:
    table = _architecture_kinds()
    assert set(table) == set(KINDS), "ARCHITECTURE.md's job kinds table differs from shared/contracts"
    for name, kind in KINDS.items():
        task, queue, path = table[name]
        assert (task, queue) == (kind.task_name, kind.queue), name
        # the handler named in the table registers this kind's input, in a module its queue's
        # worker imports
        source = (REPO / path).read_text()
        assert f"@job_task({kind.input.__name__})" in source, (name, path)
        module = path.removesuffix(".py").replace("/", ".")
        assert module in QUEUE_MODULES[kind.queue], (name, module)


def test_every_queue_has_a_worker_and_every_kind_a_queue() -> None:
    assert set(QUEUE_MODULES) == set(QUEUES)
    assert {k.queue for k in KINDS.values()} == set(QUEUES)
    assert all(get_kind(k.input.kind) is k for k in KINDS.values())


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_has_its_sentence_in_english_and_korean(code: ErrorCode) -> None:
    assert i18n.knows(f"job.{code}", "en") and i18n.knows(f"job.{code}", "ko"), code


def test_rows_in_flight_parse_and_fingerprints_keep_their_shape() -> None:
    """A row written by an older (or newer) version parses: unknown keys ignored, later fields
    defaulted. The stored JSON is what the hand-built dicts were (an Idempotency-Key replay made
    across a deploy still matches its fingerprint)."""
    likeness = uuid.uuid4()
    old = {"likeness_id": str(likeness), "styles": ["film-outdoor"], "count": 2, "from_the_future": 1}
    parsed = GeneratePortraits.model_validate(old)
    assert (parsed.likeness_id, parsed.seed, parsed.pose_id) == (likeness, None, None)
    assert parsed.to_row() == {"likeness_id": str(likeness), "styles": ["film-outdoor"], "count": 2}
    assert TrainLikeness(likeness_id=likeness, fingerprint="f").to_row() == {
        "likeness_id": str(likeness),
        "fingerprint": "f",
    }
    assert CheckPhotos.model_validate({"photo_ids": [str(likeness)]}).fingerprint is None
    job = uuid.uuid4()
    assert SendEmail.job_failed(job).to_row() == {
        "template": "job_failed",
        "job_id": str(job),
        "event_key": f"job:{job}:failed",
    }


def test_a_refused_input_fails_with_the_contracts_own_code_in_words() -> None:
    with pytest.raises(ValidationError) as caught:
        GeneratePortraits.model_validate({"likeness_id": str(uuid.uuid4()), "styles": ["a"], "count": 9})
    error = JobError.invalid_input(caught.value)
    assert error.code == "bad_count" and error.message == "Ask for 1 to 8 portraits per style."
    assert "8" in i18n.job_error_message(error.code, error.message, error.result(), "ko")
    with pytest.raises(ValidationError) as caught:
        SendEmail.model_validate({"template": "nope"})
    assert JobError.invalid_input(caught.value).code == "unknown_template"
    with pytest.raises(ValidationError) as caught:
        TrainLikeness.model_validate({"likeness_id": "not-a-uuid"})
    error = JobError.invalid_input(caught.value)
    assert error.code == "bad_input" and "likeness_id" in error.message


def test_every_mail_template_has_a_constructor_or_is_an_account_mail() -> None:
    account = {Template.verify_email, Template.reset_password, Template.signup_existing}
    built = {
        SendEmail.portraits_ready(uuid.uuid4()).template,
        SendEmail.training_finished(uuid.uuid4(), uuid.uuid4()).template,
        SendEmail.job_failed(uuid.uuid4()).template,
        SendEmail.data_erased("a@example.com", "ko", "hash").template,
    }
    assert built | account == set(Template)
    assert all(SendEmail.account(t).event_key for t in account)


def test_likeness_files_of_old_and_broken_rows() -> None:
    assert LikenessFiles.of(None) is None and LikenessFiles.of({"files": {}}) is None
    files = LikenessFiles.of({"files": {"diffusers": "users/u/likenesses/l/diffusers/w.safetensors"}})
    assert files is not None and files.embeddings is None and files.key("kohya") is None


def test_every_stage_names_its_file_and_every_stage_file_a_stage() -> None:
    """One stage vocabulary: progress labels and timing keys (Stage) name the module that runs them."""
    from shared.contracts.stages import STAGE_MODULES, STAGE_SHARES, Stage

    folder = REPO / "services" / "generator" / "stages"
    files = {p.stem for p in folder.glob("*.py")} - {"__init__", "common"}
    assert set(STAGE_MODULES) == set(Stage) == set(STAGE_SHARES)
    assert set(STAGE_MODULES.values()) == files
    assert abs(sum(STAGE_SHARES.values()) - 1.0) < 1e-9
