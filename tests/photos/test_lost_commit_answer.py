"""An upload whose COMMIT was sent but whose answer was lost (the connection dropped: a failover, a
restart, a network blip). The rows may or may not be stored, so the upload routes keep the objects
they wrote and answer 503 saying so; the announcements (shared/pending_objects.py), settled in the
rows' transaction, tell the retention sweep which objects no row names.

The routes' storing functions run in-process with a session whose connection goes through a TCP proxy
in front of the test Postgres that cuts the connection at the COMMIT, after or before the server got it.
"""

import glob
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.api.language import Refusal
from services.gateway.api.routes.photos import _store_upload
from services.gateway.api.routes.poses import _store as _store_pose
from shared import pending_objects, storage
from shared.config import get_settings
from shared.contracts.pose_extract import POSE_FILES
from shared.db import session_scope
from shared.images import CleanImage, clean_upload
from shared.localstack import LocalStack
from shared.models import Job, PendingObject, Photo, PhotoStatus, PosePhoto, User
from tests.conftest import wait_until
from tests.pictures import astronaut_variants, jpeg


class CutAtCommit:
    """TCP in front of Postgres's unix socket; once armed, the connection that sends COMMIT is cut
    before the server's answer comes back: after the server got the COMMIT (`deliver`, the classic
    ambiguous commit) or before (it never commits)."""

    def __init__(self, unix_path: str, *, deliver: bool) -> None:
        self.unix_path = unix_path
        self.deliver = deliver
        self.armed = False
        self.cut = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.unix_path)
            state = {"mute": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        try:
            while data := client.recv(65536):
                commit = self.armed and b"COMMIT" in data
                if commit:
                    state["mute"] = True  # the server's answer never reaches the client
                    if self.deliver:
                        server.sendall(data)
                        time.sleep(0.5)  # the server commits
                    self.cut += 1
                    for s in (client, server):
                        s.shutdown(socket.SHUT_RDWR)
                        s.close()
                    return
                server.sendall(data)
        except OSError:
            pass

    def _down(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        try:
            while data := server.recv(65536):
                if not state["mute"]:
                    client.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def _user() -> User:
    uid = uuid.uuid4()
    user = User(id=uid, email=f"{uid.hex}@example.com", password_hash="x", face_consent_at=func.now())
    with session_scope() as session:
        session.add(user)
    return user


def _cleaned(count: int) -> list[CleanImage]:
    s = get_settings()
    return [
        clean_upload(
            jpeg(img), filename=f"me{i}.jpg", max_bytes=s.upload_max_bytes, max_pixels=s.upload_max_pixels
        )
        for i, img in enumerate(astronaut_variants(count))
    ]


@pytest.fixture(params=[True, False], ids=["commit_landed", "commit_lost"])
def cut_session(request: pytest.FixtureRequest, stack: LocalStack) -> Iterator[tuple[Session, CutAtCommit]]:
    """A session through a `CutAtCommit` proxy (armed by the test)."""
    storage.ensure_bucket()
    [unix_path] = [p for p in glob.glob(f"{stack.root}/postgres/.s.PGSQL.*") if not p.endswith(".lock")]
    proxy = CutAtCommit(unix_path, deliver=request.param)
    engine = create_engine(f"postgresql+psycopg://postgres:@127.0.0.1:{proxy.port}/studio?sslmode=disable")
    session = sessionmaker(engine, expire_on_commit=False)()
    try:
        yield session, proxy
    finally:
        proxy.armed = False
        session.close()
        engine.dispose()
        proxy.close()


def _no_announcement_locked(keys: list[str]) -> bool:
    """The cut connection's transaction is over on the server (its row locks gone): the sweep, which
    skips locked announcements, sees them all."""
    announced = select(PendingObject.key).where(PendingObject.key.in_(keys))
    with session_scope() as session:
        free = session.scalars(announced.with_for_update(skip_locked=True)).all()
        return len(free) == len(session.scalars(announced).all())


def _assert_sweep_keeps_exactly_the_named(keys: list[str], named: list[str]) -> None:
    """After the sweep (past its grace), the objects a committed row names are there and no other."""
    wait_until(lambda: _no_announcement_locked(keys), timeout=10, what="the cut transaction to end")
    pending_objects.sweep(grace_seconds=0)
    assert [k for k in keys if storage.exists(k)] == named


def test_photos_whose_commit_answer_was_lost_keep_their_files_and_the_sweep_decides(
    cut_session: tuple[Session, CutAtCommit],
) -> None:
    session, proxy = cut_session
    user, cleaned = _user(), _cleaned(2)
    proxy.armed = True
    with pytest.raises(Refusal) as raised:
        _store_upload(session, user.id, cleaned, None)
    assert proxy.cut == 1, raised.value
    assert raised.value.status_code == 503 and raised.value.headers and "Retry-After" in raised.value.headers
    assert "may or may not be stored" in raised.value.detail

    with session_scope() as check:
        rows = check.scalars(select(Photo).where(Photo.user_id == user.id)).all()
        jobs = check.scalar(select(func.count()).select_from(Job).where(Job.user_id == user.id))
        keys = storage.list_keys(storage.user_key(user.id, "photos") + "/")
    assert len(keys) == 2, "the error path deleted objects whose rows may have committed"
    landed = bool(rows)
    assert (len(rows), jobs) == ((2, 1) if landed else (0, 0))
    _assert_sweep_keeps_exactly_the_named(keys, sorted(r.object_key for r in rows))

    # The user sends the same photos again, as the 503 allows: usable photos either way.
    with session_scope() as retry:
        again = _store_upload(retry, user.id, cleaned, None)
    statuses = [p.status for p in again.photos]
    expected = PhotoStatus.rejected if landed else PhotoStatus.checking  # a duplicate of a usable original
    assert statuses == [expected, expected]
    with session_scope() as check:
        originals = check.scalars(
            select(Photo.object_key).where(
                Photo.user_id == user.id, Photo.reason_code.is_distinct_from("duplicate")
            )
        ).all()
    assert len(originals) == 2 and all(storage.exists(k) for k in originals)


def test_a_pose_whose_commit_answer_was_lost_keeps_its_file_and_the_sweep_decides(
    cut_session: tuple[Session, CutAtCommit],
) -> None:
    session, proxy = cut_session
    user = _user()
    proxy.armed = True
    with pytest.raises(Refusal) as raised:
        _store_pose(session, user, _cleaned(1)[0], None)
    assert proxy.cut == 1, raised.value
    assert raised.value.status_code == 503 and "may or may not be stored" in raised.value.detail
    with session_scope() as check:
        rows = check.scalars(select(PosePhoto.object_key).where(PosePhoto.user_id == user.id)).all()
    # the uploaded photo only: when the commit landed, the suite's platform (when one runs) may
    # already have extracted the pose and written its drawings beside it
    keys = [
        k
        for k in storage.list_keys(storage.user_key(user.id, "poses") + "/")
        if not k.endswith(tuple(v for role, v in POSE_FILES.items() if role != "photo"))
    ]
    assert len(keys) == 1, "the error path deleted the object its row may name"
    _assert_sweep_keeps_exactly_the_named(keys, list(rows))
