"""Whose photos are these: the dominant identity of a photo set and the photos of someone else.

Works on the 128-d dlib face embeddings (shared/faces.py) that the photo check stores on each
photo. The same person's photos lie within ~0.2-0.5 of each other, strangers 0.6-0.9 apart
(dlib's same-person threshold is 0.6, SAME_PERSON_DISTANCE).

The rule (a medoid of the largest cluster, robust to a minority of strangers):
1. each photo's neighbours are the photos within `threshold` of it (itself included);
2. the core is the neighbourhood of the photo with the most neighbours (ties: the smallest sum of
   distances to all others, i.e. the medoid);
3. the reference is the mean embedding of the core; a photo farther than `threshold` from it is
   someone else;
4. no decision while the core is not a strict majority of the set, or has fewer than
   MIN_CORE photos: with 2 photos of A and 2 of B there is no telling which one is the user.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from shared.i18n import Sentence
from shared.models import Photo, PhotoStatus, User

SAME_PERSON_DISTANCE = 0.6  # dlib's threshold for its ResNet face embedding (Euclidean)
MISMATCH = "identity_mismatch"  # the reason code of a photo of someone else
MIN_CORE = 2  # photos of one person needed before anyone else's photo can be called out


@dataclass(frozen=True)
class IdentityCheck:
    decided: bool  # False: no majority yet, nobody is called out
    distances: np.ndarray  # (n,) float: each photo's distance to the reference (nan if undecided)
    others: np.ndarray  # (n,) bool: looks like someone else

    @property
    def core_size(self) -> int:
        return int((~self.others).sum()) if self.decided else 0


def check_identity(embeddings: np.ndarray, threshold: float = SAME_PERSON_DISTANCE) -> IdentityCheck:
    """Which of `embeddings` ((n, 128) float, one per photo whose face passed the check) show
    someone other than the set's dominant person (see the module doc for the rule).

    Raises ValueError for an array not shaped (n, 128)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or (emb.size and emb.shape[1] != 128):
        raise ValueError(f"need (n, 128) embeddings, got {emb.shape}")
    n = len(emb)
    undecided = IdentityCheck(False, np.full(n, np.nan), np.zeros(n, dtype=bool))
    if n < MIN_CORE:
        return undecided
    pairwise = np.linalg.norm(emb[:, None, :] - emb[None, :, :], axis=2)
    near = pairwise <= threshold
    counts = near.sum(axis=1)
    centre = min(range(n), key=lambda i: (-counts[i], pairwise[i].sum()))
    core = near[centre]
    if core.sum() < MIN_CORE or 2 * core.sum() <= n:
        return undecided
    reference = emb[core].mean(axis=0)
    distances = np.linalg.norm(emb - reference, axis=1)
    return IdentityCheck(True, distances, distances > threshold)


def lock_photo_set(session: Session, user_id: uuid.UUID) -> None:
    """Lock the user's row (FOR UPDATE) until the transaction ends: whoever changes the user's
    photo set (a check, a deletion) takes this lock before writing any photo row, so two writers
    decide on the same set, one after the other, and never deadlock on each other's rows."""
    session.execute(select(User.id).where(User.id == user_id).with_for_update())


def recheck_photos(session: Session, user_id: uuid.UUID) -> list[Photo]:
    """Apply the rule to a user's photo set; returns the photos whose verdict changed.

    The set is every photo of the user whose face passed the check (it has an embedding): those
    `accepted` and those set aside earlier as `identity_mismatch`. A photo of someone else becomes
    `rejected` / "identity_mismatch" with a sentence (EN/KO); one set aside earlier that now
    matches the dominant person (the set changed) is `accepted` again. Runs after every photo
    check and every deletion, so the set's verdicts never go stale. Takes lock_photo_set (callers
    take it earlier, before their own writes); the caller commits."""
    lock_photo_set(session, user_id)
    photos = session.scalars(
        select(Photo)
        .where(
            Photo.user_id == user_id,
            Photo.embedding.is_not(None),
            or_(Photo.status == PhotoStatus.accepted, Photo.reason_code == MISMATCH),
        )
        .order_by(Photo.created_at, Photo.id)
    ).all()
    if not photos:
        return []
    verdict = check_identity(np.asarray([p.embedding for p in photos], dtype=np.float32))
    sentence = Sentence(f"photo.{MISMATCH}")
    changed = []
    for photo, other in zip(photos, verdict.others, strict=True):
        if other and photo.status == PhotoStatus.accepted:
            photo.status, photo.reason_code = PhotoStatus.rejected, MISMATCH
            photo.reason, photo.reason_sentence = sentence.render(), sentence.to_json()
            changed.append(photo)
        elif not other and photo.reason_code == MISMATCH:
            photo.status, photo.reason_code, photo.reason, photo.reason_sentence = (
                PhotoStatus.accepted, None, None, None,
            )  # fmt: skip
            changed.append(photo)
    return changed
