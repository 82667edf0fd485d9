"""The answers of a deletion whose files S3 deletes now or later (services/gateway/api/deletion.py),
without S3: `pending_objects.delete_now` says whether the files went."""

import json

import pytest

from services.gateway.api.deletion import deleted_files
from shared import pending_objects
from shared.i18n import say

PENDING = say("delete.pending")


@pytest.mark.parametrize("gone", [True, False])
def test_deleted_files_answers_with_or_without_a_body(monkeypatch: pytest.MonkeyPatch, gone: bool) -> None:
    """A route with its own answer (DELETE /v1/me/consent: a sentence and counts) gets 200 with it,
    or 202 with the storage sentence added; a plain deletion 204, or 202 with the sentence alone."""
    monkeypatch.setattr(pending_objects, "delete_now", lambda keys: gone)
    plain = deleted_files(["users/x/a.jpg"])
    with_body = deleted_files(["users/x/a.jpg"], {"detail": "Withdrawn.", "photos": 1})
    if gone:
        assert (plain.status_code, plain.body) == (204, b"")
        assert with_body.status_code == 200
        assert json.loads(with_body.body) == {"detail": "Withdrawn.", "photos": 1}
    else:
        assert plain.status_code == 202 and json.loads(plain.body) == {"detail": PENDING}
        assert with_body.status_code == 202
        assert json.loads(with_body.body) == {"detail": f"Withdrawn. {PENDING}", "photos": 1}


def test_every_deletion_documents_its_202_sentence() -> None:
    """A DELETE answered 202 `{"detail"}` while S3 was down, but the schema showed a 202 without
    a body."""
    from services.gateway.app import create_app

    paths = create_app().openapi()["paths"]
    deletions = {path: item["delete"] for path, item in paths.items() if "delete" in item}
    assert len(deletions) >= 5, deletions.keys()
    for path, op in deletions.items():
        accepted = op["responses"]["202"]
        schema = accepted["content"]["application/json"]["schema"]
        assert schema.get("$ref", "").split("/")[-1] in {"Message", "ConsentWithdrawnOut", "ErasureOut"}, path
