"""The OpenAPI schema is read by API clients, not by us: its texts name no file of this repository
(a newcomer found `services/gateway/api/reads.py`, `shared/scheduler.py` and `schemas.Patch` in
it). Route docstrings keep such notes after a form feed (\\f), which FastAPI leaves out."""

import json
import re

from services.gateway.app import create_app

INTERNAL = re.compile(r"services/|shared/|\b\w+\.py\b|\bschemas\.\w")


def test_the_openapi_texts_name_no_file_of_the_repository() -> None:
    spec = json.dumps(create_app().openapi())
    where = [m.group(0) for m in re.finditer(r".{60}(?:" + INTERNAL.pattern + ").{20}", spec)]
    assert not INTERNAL.findall(spec), where


def test_a_repeated_erasure_is_documented_as_it_behaves() -> None:
    """A repeat returns the same job only while the erasure runs; after it, the token is refused."""
    text = create_app().openapi()["paths"]["/v1/me"]["delete"]["description"]
    assert "while the erasure runs" in text and "401" in text


def test_the_upload_routes_document_their_form_refusals() -> None:
    """A missing or empty form field is a 400 `{"detail"}` (the form is read by hand, after the
    sign-in and the consent), but the schema showed only 201 and 422."""
    paths = create_app().openapi()["paths"]
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path in ("/v1/photos", "/v1/poses"):
        responses = paths[path]["post"]["responses"]
        for code in ("400", "409", "413", "415"):
            assert responses[code]["content"] == error, (path, code)
        assert "form field" in responses["400"]["description"]
