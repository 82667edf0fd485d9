"""Typed contracts between the services: one module per job kind (its input, its result, the
files and mails it promises), the registry of kinds, error codes, the likeness files.

Free of SQLAlchemy, Celery and torch (.importlinter), so every service and image can import it."""

from shared.contracts.base import QUEUES, JobInput, JobKind, JobResult, Queue
from shared.contracts.erase_user import EraseUser, UserErased
from shared.contracts.errors import ErrorCode
from shared.contracts.generate_portraits import GeneratePortraits, PortraitsMade
from shared.contracts.photo_check import CheckPhotos, PhotosChecked
from shared.contracts.pose_extract import ExtractPose, PoseExtracted
from shared.contracts.registry import KINDS, JobKindName, get_kind, kind_of
from shared.contracts.retention_sweep import RetentionSwept, SweepRetention
from shared.contracts.send_email import EmailSent, SendEmail, Template
from shared.contracts.train_likeness import LikenessTrained, TrainLikeness

__all__ = [
    "QUEUES",
    "KINDS",
    "CheckPhotos",
    "EmailSent",
    "EraseUser",
    "ErrorCode",
    "ExtractPose",
    "GeneratePortraits",
    "JobInput",
    "JobKind",
    "JobKindName",
    "JobResult",
    "LikenessTrained",
    "PhotosChecked",
    "PoseExtracted",
    "PortraitsMade",
    "Queue",
    "RetentionSwept",
    "SendEmail",
    "SweepRetention",
    "Template",
    "TrainLikeness",
    "UserErased",
    "get_kind",
    "kind_of",
]
