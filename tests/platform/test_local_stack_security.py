"""The embedded stack's S3 server (SeaweedFS) keeps users' photos behind the S3 keys.

SeaweedFS's filer and volume servers listen on 127.0.0.1 beside the S3 port; without keys they answered
anyone on the machine, and any web page in its browser (`Access-Control-Allow-Origin: *`): list every
user's folder, read a face photo, write and delete files (found by a newcomer, session 13). The stack now
gives them JWT signing keys (SeaweedFS `security.toml`), so only the S3 API, with the S3 keys, reaches
the objects.
"""

import uuid

import httpx

from shared import storage
from shared.config import get_settings
from shared.localstack import LocalStack

REFUSED = {401, 403}


def test_only_the_s3_api_reaches_the_objects(stack: LocalStack) -> None:
    key = storage.user_key(uuid.uuid4(), "photos", "face.jpg")
    storage.put_bytes(key, b"a face", "image/jpeg")
    filer = f"http://127.0.0.1:{stack.base_port + 4}/buckets/{get_settings().s3_bucket}"
    with httpx.Client(timeout=10) as http:
        read = http.get(f"{filer}/{key}")
        listing = http.get(f"{filer}/users/", headers={"Accept": "application/json"})
        written = http.put(f"{filer}/users/injected.txt", content=b"x")
        deleted = http.delete(f"{filer}/{key}")
    assert read.status_code in REFUSED and b"a face" not in read.content, read.status_code
    assert listing.status_code in REFUSED, (listing.status_code, listing.text[:200])
    assert written.status_code in REFUSED, written.status_code
    assert deleted.status_code in REFUSED, deleted.status_code
    assert storage.get_bytes(key) == b"a face"  # the S3 API with the keys still works
    assert not storage.exists("users/injected.txt")
    storage.delete_keys([key])
