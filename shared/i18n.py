"""The sentences a person reads from the API (refusals, job failures), in English and Korean.

The gateway answers in the language of the request's `Accept-Language` (RFC 9110 §12.5.4; the web
page sends its own language); workers store the English sentence plus a `Sentence` (key and
values), so a job's error can be shown later in whichever language the reader asks for.

A template is `str.format` text; a value may be a dict of "one"/"other" forms chosen by the `count`
field (English plurals). A key missing in a language falls back to English. Korean templates may
leave values out. Style names and descriptions live with the styles (shared/styles/*.yaml); the
mails have their own catalogue (services/notifier/i18n.py).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_LOCALE = "en"
LOCALES = ("en", "ko")

Catalog = dict[str, str | dict[str, str]]

EN: Catalog = {
    # Uploads (shared/images.py, the photo and pose routes)
    "upload.too_large": "{name} is larger than {mb} MB, the limit per photo.",
    "upload.empty": "{name} is empty.",
    "upload.not_image": "{name} is not a JPEG, PNG, WebP or HEIC photo.",
    "upload.too_many_pixels": "{name} is {width}x{height} pixels; the limit is {mp} megapixels.",
    "upload.too_many_pixels_jpeg": (
        "{name} is {width}x{height} pixels; the limit is {mp} megapixels "
        "(a JPEG up to 8 times as wide and high is reduced)."
    ),
    "upload.not_reducible": "{name} is {width}x{height} pixels and could not be reduced safely.",
    "upload.unreadable": "{name} could not be read as an image; it may be damaged or incomplete.",
    "upload.count": "Send between 1 and {max} photos at once.",
    "upload.none_in_field": (
        "No photo arrived in the form field {field}: send 1 to {max} photos there, in a complete "
        "multipart/form-data form."
    ),
    "upload.one_photo": "Send one photo, in the form field {field}.",
    "upload.not_a_form": "Send the photos as a multipart/form-data form, in the field {field}.",
    "upload.not_a_form_one": "Send the photo as a multipart/form-data form, in the field {field}.",
    "upload.request_too_large": (
        "This upload is larger than a request may be: at most {files} photos of up to {mb} MB each."
    ),
    # Training
    "training.no_photos": "You have no good photos yet; upload {need} to train.",
    "training.photos_short": {
        "one": "You have 1 good photo; upload {more} more to train.",
        "other": "You have {count} good photos; upload {more} more to train.",
    },
    "training.photos_checking": {
        "one": "1 of your photos is still being checked; try again in a minute.",
        "other": "{count} of your photos are still being checked; try again in a minute.",
    },
    "training.busy": "Your likeness is still training; wait until it finishes before you start another.",
    "likeness.not_downloadable": "This likeness is not ready to download (it is {status}).",
    # Portraits
    "portraits.likeness_not_ready": "This likeness is not ready yet (it is {status}).",
    "portraits.pose_not_ready": "This pose photo cannot be used (it is {status}).",
    "portraits.busy": "You already have {count} portrait jobs under way; wait until one finishes.",
    "portraits.quota": "You can make {limit} portraits a day; {left} are left today.",
    # Accounts and requests
    "auth.bad_login": "Wrong email or password.",
    "auth.too_many_failures": (
        "This account was tried with too many wrong passwords; please try again in {minutes} minutes, "
        "or reset your password."
    ),
    "auth.bad_link": "This link is invalid or has expired.",
    "auth.login_again": "Please log in again.",
    "auth.account_gone": "This account no longer exists: it was erased. Sign up again to use the service.",
    "auth.sign_in": "Please log in first: this request needs your access token (Authorization: Bearer).",
    "auth.account_erasing": (
        "This account is being erased (asked for at {since} UTC): every photo, model and portrait "
        "is deleted, and we send a mail to this address when it is done."
    ),
    # A token of an account being erased, on a route other than the erasure's own: its session ended
    "auth.session_erasing": (
        "This account is being erased, so it can no longer be used: every photo, model and portrait "
        "is deleted, and we send a mail to its address when it is done."
    ),
    "photo.check_failed": "We could not check this photo; please upload it again.",
    "pose.extract_failed": "We could not find the pose in this photo; delete it and upload it again.",
    "pose.extract_canceled": "Finding the pose in this photo was canceled; delete it and upload it again.",
    "delete.pending": (
        "Deleted. Storage is not answering right now, so its files are removed in the next few "
        "minutes; nothing more to do."
    ),
    "request.rate_limited": "Too many requests; please wait a minute and try again.",
    "request.key_reused": "This Idempotency-Key was already used for a different request; use a new key.",
    "request.key_in_progress": "A request with this Idempotency-Key is still in progress; try again shortly.",
    "upload.in_progress": "Another upload of yours is still being stored; send this one again in a moment.",
    "upload.too_many_photos": (
        "You have {have} photos and can keep at most {max}; delete some (rejected ones first) before "
        "uploading {count} more."
    ),
    "upload.too_many_poses": (
        "You have {have} pose photos and can keep at most {max}; delete some (rejected ones first) "
        "before uploading another."
    ),
    "upload.outcome_unknown": (
        "The database stopped answering while saving your photos, so they may or may not be stored. "
        "Look at your photos before sending them again (a photo sent twice counts once)."
    ),
    "pose.outcome_unknown": (
        "The database stopped answering while saving your pose photo, so it may or may not be stored. "
        "Look at your poses before sending it again."
    ),
    "job.already_ended": "This job already ended ({status}).",
    # Job failures (Job.error_message), by error code where the sentence has no values
    "job.too_few_photos": {
        "one": "Only 1 photo has a clear face of you; upload {more} more (at least {needed} are needed).",
        "other": (
            "Only {count} photos have a clear face of you; upload {more} more (at least {needed} are needed)."
        ),
    },
    "job.photos_deleted": {
        "one": "1 of the chosen photo was deleted before training started.",
        "other": "{count} of the chosen photos were deleted before training started.",
    },
    # Job failures by error code (shared/contracts/errors.py): the workers raise the code, never the text
    "job.likeness_deleted": "This likeness was deleted; train a new one.",
    "job.likeness_not_ready": "This likeness is not ready (it is {status}).",
    "job.likeness_base_mismatch": (
        "This likeness was trained for the base model {trained}, and portraits are made with "
        "{serving} now: train the likeness again."
    ),
    "job.likeness_files_missing": "This likeness has no LoRA file; train it again.",
    "job.pose_deleted": "The pose photo was deleted; choose another pose.",
    "job.pose_not_ready": "The pose photo cannot be used (it is {status}).",
    "job.unknown_style": "Unknown style: {styles}.",
    "job.no_styles": "Choose at least one style.",
    "job.bad_count": "Ask for 1 to {max} portraits per style.",
    "job.daily_limit": (
        "You can make {limit} portraits a day; {left} are left today. Ask for fewer or try tomorrow."
    ),
    "job.worker_restarting": (
        "The portrait worker had a fault and restarts; your portraits will be made again."
    ),
    "job.foreign_object": "{what} points outside its owner.",
    "job.bad_input": "This job's input is not valid: {detail}",
    "job.unknown_template": "There is no email template {template}.",
    "job.internal_error": (
        "This job failed {attempts} times in a row, so we stopped trying. "
        "It was not your fault; please try again later."
    ),
    "job.worker_lost": (
        "The worker running this job stopped {attempts} times, so we stopped trying. Please try again later."
    ),
    # A LoRA file the generator cannot apply (services/generator/lora_files.py); the reason is
    # the checker's English words (shapes, formats).
    "job.unusable_lora": "A LoRA file cannot be used: {reason}.",
    "job.unusable_likeness_lora": "Your likeness LoRA ({file}) cannot be used: {reason}.",
    "job.unusable_style_lora": "The style LoRA {name} ({file}) cannot be used: {reason}.",
    # Why a photo was rejected (shared/faces.py, shared/photo_diagnosis.py, shared/identity.py)
    "photo.too_small": (
        "Photo too small: {width}x{height} px; use a photo at least {min} px wide and high, "
        "with your face filling a good part of it."
    ),
    "photo.no_face": "No face found: use a photo where your face is clearly visible.",
    "photo.multiple_faces": "{word} faces found: use a photo of you alone.",
    "photo.face_too_small": "Face too small: use a closer or larger photo.",
    "photo.face_too_small_px": "Face too small: {size} px, need {need} px. Use a closer or larger photo.",
    "photo.face_blurry_measured": (
        "Face too blurry (sharpness {sharpness}, need {need}): use a sharper photo."
    ),
    "photo.too_blurry": (
        "Face too blurry: hold the camera still, let it focus on your face (tap your face on a phone's "
        "screen) and use a sharp photo."
    ),
    "photo.photo_blurry": (
        "Photo too blurry to find a face: hold the camera still, let it focus on your face and use a "
        "sharp photo."
    ),
    "photo.too_dark": (
        "Photo too dark to see a face: take it again in more light (face a window or a lamp) "
        "or use a brighter photo."
    ),
    "photo.face_covered": (
        "We can see a face but not its eyes: they may be covered (sunglasses, hair, a hand, a mask) "
        "or the face turned away. Use a photo where you look at the camera with both eyes visible."
    ),
    "photo.identity_mismatch": (
        "This looks like a different person from the one in your other photos: remove it and keep "
        "photos of you only."
    ),
    "photo.duplicate": "You already uploaded this photo; it counts once toward your good photos.",
    # Pose photos (shared/blazepose.py)
    "pose.several_people": (
        "{count} people in this photo: we use the pose of the most prominent one, drawn over the photo "
        "in the preview. Choose a photo of one person for another pose."
    ),
    # Accounts (answers of the auth and me routes)
    "auth.signup_accepted": (
        "Thanks! If this address can be used, you can log in now, and we sent it an email to confirm it."
    ),
    "auth.reset_accepted": "If an account uses this address, we sent it a link to choose a new password.",
    "auth.email_confirmed": "Thanks, your email address is confirmed.",
    "auth.password_changed": "Your password was changed. Please log in with the new one.",
    "me.erasing": "Your account and all your photos, models and portraits are being deleted.",
    # DELETE /v1/me/consent, by what it found (face_data.Withdrawal.sentence_key)
    "consent.withdrawn": (
        "Your consent is withdrawn: your photos, pose photos and likeness models are deleted. "
        "Your portraits and account stay."
    ),
    "consent.withdrawn_jobs": (
        "Your consent is withdrawn: your photos, pose photos and likeness models are deleted, and their "
        "trainings and portrait jobs under way are canceled. Your portraits and account stay."
    ),
    "consent.withdrawn_nothing": (
        "Your consent is withdrawn; there were no photos, pose photos or likeness models to delete. "
        "Your portraits and account stay."
    ),
    "consent.not_given": (
        "There was no consent to withdraw: this account has not agreed to the processing of face "
        "photos, or already withdrew it, and no face photos are stored. Your portraits and account stay."
    ),
    "consent.required": (
        "Please agree to the processing of your face photos first: "
        'POST /v1/me/consent with {{"accept": true}}.'
    ),
    # Not found (404) by what was asked for; another user's object is not found too
    "not_found.job": "Job not found.",
    "not_found.pose": "Pose not found.",
    "not_found.likeness": "Likeness not found.",
    "not_found.portrait": "Portrait not found.",
    "not_found.photo": "Photo not found.",
    "not_found.style_preview": "Preview of this style not found.",
    "not_found.job_portraits": "Portraits of this job not found.",
    "not_found.metrics": "Metrics are not served on the public port.",
    "not_found.page": "The web page is not built; see /docs.",
    # HTTP's own refusals (Starlette's routing, body limits)
    "http.404": "There is nothing at this address.",
    "http.405": "This address does not take {method} requests; it takes {allowed}.",
    "http.other": "The request could not be answered ({status}).",
    "http.body_unreadable": (
        "The request body could not be read: send JSON as UTF-8 text with Content-Type: application/json "
        "(nested at most a few hundred levels), or files as a multipart/form-data form."
    ),
    "validation.not_json": "Send the request body as JSON, with the header Content-Type: application/json.",
    "request.too_large": "The request body is larger than the {size} this API accepts.",
    "request.too_slow": "The request body did not arrive within {seconds} seconds; please send it again.",
    # A request that fails validation (422): one sentence naming each field
    "validation.fields": {
        "one": "Please check this field: {fields}.",
        "other": "Please check these fields: {fields}.",
    },
    "validation.more": ", and {count} more",
    "validation.json": "The request body is not valid JSON{at}.",
    "validation.json_at": " (at character {at})",
    # Outages (503)
    "outage.database": "The database is not answering; try again in a minute.",
    "outage.busy": "The service is busy right now; try again in a few seconds.",
    "outage.redis": "The job queue is not answering; try again in a minute.",
    "outage.storage": "Storage is not answering; try again in a minute.",
    "outage.store_failing": "Storage is failing to save or read files right now; try again in a minute.",
    # GET /v1/system
    "system.demo": (
        "Demo models: the 'tiny' preset runs small random-weight models built from configs, so the "
        "images are noise. Set MODEL_PRESET=sd15 with real weights for real portraits."
    ),
    "system.real": "Real models are loaded.",
    # Job stages for people (Job.stage is the worker's label; stage_text() maps it here)
    "stage.queued": "in the queue",
    "stage.starting": "starting",
    "stage.retrying": "trying again",
    "stage.canceled": "canceled",
    "stage.done": "finished",
    "stage.downloading photos": "getting your photos",
    "stage.preprocessing": "preparing your photos",
    "stage.training_step": "learning your likeness (step {step} of {total})",
    "stage.choosing the best checkpoint": "choosing the best result",
    "stage.saving": "saving your likeness",
    "stage.checking faces": "checking your photos",
    "stage.finding the pose": "finding the pose",
    "stage.drawing the skeleton": "drawing the pose",
    "stage.account deleted": "account deleted",
    "stage.likeness deleted": "canceled: the likeness was deleted",
    "stage.consent withdrawn": "canceled: the consent to process face photos was withdrawn",
    "stage.deleting files": "deleting files",
    "stage.deleting records": "deleting records",
    "stage.loading likeness": "loading your likeness",
    "stage.generating": "painting portraits",
    "stage.portrait": "{style}: {step}",
    "stage.portrait.txt2img": "painting the picture",
    "stage.portrait.detail": "refining the face",
    "stage.portrait.beautify": "evening out tone and colour",
    "stage.portrait.detail2": "refining the face again",
    "stage.portrait.upscale": "adding detail at full size",
    "stage.portrait.done": "finished",
    "stage.working": "working",
}

KO: Catalog = {
    "upload.too_large": "{name} 파일이 {mb}MB보다 큽니다. 사진 한 장은 {mb}MB까지 올릴 수 있습니다.",
    "upload.empty": "{name} 파일이 비어 있습니다.",
    "upload.not_image": "{name} 파일은 JPEG, PNG, WebP, HEIC 사진이 아닙니다.",
    "upload.too_many_pixels": "{name} 사진은 {width}x{height}픽셀입니다. {mp}메가픽셀까지 올릴 수 있습니다.",
    "upload.too_many_pixels_jpeg": (
        "{name} 사진은 {width}x{height}픽셀입니다. {mp}메가픽셀까지 올릴 수 있습니다"
        "(가로세로 8배까지 큰 JPEG는 줄여서 받습니다)."
    ),
    "upload.not_reducible": "{name} 사진은 {width}x{height}픽셀이라 안전하게 줄일 수 없습니다.",
    "upload.unreadable": (
        "{name} 파일을 이미지로 읽을 수 없습니다. 손상되었거나 일부만 받은 파일일 수 있습니다."
    ),
    "upload.count": "사진은 한 번에 1장부터 {max}장까지 보낼 수 있습니다.",
    "upload.none_in_field": (
        "{field} 필드에 사진이 오지 않았습니다. 완전한 multipart/form-data 양식의 이 필드에 "
        "사진을 1장부터 {max}장까지 담아 보내 주세요."
    ),
    "upload.one_photo": "사진 한 장을 {field} 필드에 담아 보내 주세요.",
    "upload.not_a_form": "사진을 multipart/form-data 양식의 {field} 필드에 담아 보내 주세요.",
    "upload.not_a_form_one": "사진 한 장을 multipart/form-data 양식의 {field} 필드에 담아 보내 주세요.",
    "upload.request_too_large": (
        "한 요청에 담을 수 있는 크기를 넘었습니다. "
        "사진은 한 번에 {files}장까지, 장당 {mb}MB까지 보낼 수 있습니다."
    ),
    "training.no_photos": "아직 통과한 사진이 없습니다. 학습하려면 {need}장을 올려 주세요.",
    "training.photos_short": "통과한 사진이 {count}장입니다. 학습하려면 {more}장 더 올려 주세요.",
    "training.photos_checking": "사진 {count}장을 아직 확인하고 있습니다. 1분쯤 뒤에 다시 시도해 주세요.",
    "training.busy": "닮은꼴 모델이 아직 학습 중입니다. 학습이 끝난 뒤에 새로 시작해 주세요.",
    "likeness.not_downloadable": "이 닮은꼴 모델은 아직 내려받을 수 없습니다.",
    "portraits.likeness_not_ready": "이 닮은꼴 모델은 아직 준비되지 않았습니다.",
    "portraits.pose_not_ready": "이 자세 사진은 쓸 수 없습니다.",
    "portraits.busy": "이미 만들고 있는 사진 작업이 {count}개 있습니다. 하나가 끝난 뒤에 다시 시도해 주세요.",
    "portraits.quota": "사진은 하루에 {limit}장까지 만들 수 있습니다. 오늘은 {left}장 남았습니다.",
    "auth.bad_login": "이메일 주소나 비밀번호가 맞지 않습니다.",
    "auth.too_many_failures": (
        "이 계정에 틀린 비밀번호가 너무 많이 입력되었습니다. "
        "{minutes}분 뒤에 다시 시도하거나 비밀번호를 재설정해 주세요."
    ),
    "auth.bad_link": "링크가 잘못되었거나 만료되었습니다.",
    "auth.login_again": "다시 로그인해 주세요.",
    "auth.account_gone": "이 계정은 삭제되어 더 이상 없습니다. 서비스를 쓰려면 다시 가입해 주세요.",
    "auth.sign_in": "먼저 로그인해 주세요. 이 요청에는 액세스 토큰(Authorization: Bearer)이 필요합니다.",
    "auth.account_erasing": (
        "이 계정을 지우는 중입니다({since} UTC에 요청). 모든 사진, 모델, 인물 사진을 지우고, "
        "끝나면 이 주소로 메일을 보냅니다."
    ),
    "auth.session_erasing": (
        "이 계정을 지우는 중이라 더 이상 쓸 수 없습니다. 모든 사진, 모델, 인물 사진을 지우고, "
        "다 지우면 계정의 주소로 메일을 보냅니다."
    ),
    "delete.pending": (
        "삭제했습니다. 지금 저장소가 응답하지 않아 파일은 몇 분 안에 지워집니다. 더 하실 일은 없습니다."
    ),
    "request.rate_limited": "요청이 너무 많습니다. 1분 뒤에 다시 시도해 주세요.",
    "request.key_reused": "이 Idempotency-Key는 다른 요청에 이미 쓰였습니다. 새 키를 쓰세요.",
    "upload.in_progress": "다른 업로드를 아직 저장하고 있습니다. 잠시 뒤에 다시 보내 주세요.",
    "upload.too_many_photos": (
        "사진이 {have}장 있으며 최대 {max}장까지 보관할 수 있습니다. {count}장을 더 올리려면 먼저 "
        "사진을 지워 주세요(거절된 사진부터)."
    ),
    "upload.too_many_poses": (
        "자세 사진이 {have}장 있으며 최대 {max}장까지 보관할 수 있습니다. 더 올리려면 먼저 "
        "자세 사진을 지워 주세요(거절된 사진부터)."
    ),
    "upload.outcome_unknown": (
        "사진을 저장하는 중에 데이터베이스가 응답하지 않아 저장되었는지 알 수 없습니다. "
        "다시 보내기 전에 사진 목록을 확인해 주세요(같은 사진은 한 번만 셉니다)."
    ),
    "pose.outcome_unknown": (
        "포즈 사진을 저장하는 중에 데이터베이스가 응답하지 않아 저장되었는지 알 수 없습니다. "
        "다시 보내기 전에 포즈 목록을 확인해 주세요."
    ),
    "request.key_in_progress": (
        "이 Idempotency-Key로 보낸 요청을 아직 처리하고 있습니다. 잠시 후 다시 시도하세요."
    ),
    "job.already_ended": "이 작업은 이미 끝났습니다.",
    "job.too_few_photos": (
        "얼굴이 선명하게 나온 사진이 {count}장뿐입니다. {more}장 더 올려 주세요(최소 {needed}장 필요)."
    ),
    "job.photos_deleted": "고른 사진 중 {count}장이 학습 시작 전에 삭제되었습니다.",
    # Job failures by error code (shared/contracts/errors.py)
    "job.unusable_lora": "LoRA 파일을 쓸 수 없습니다: {reason}.",
    "job.unusable_likeness_lora": "닮은꼴 LoRA 파일({file})을 쓸 수 없습니다: {reason}.",
    "job.unusable_style_lora": "스타일 LoRA {name} 파일({file})을 쓸 수 없습니다: {reason}.",
    "auth.signup_accepted": (
        "가입해 주셔서 감사합니다! 쓸 수 있는 주소라면 지금 로그인할 수 있으며, 확인 메일을 보냈습니다."
    ),
    "auth.reset_accepted": "이 주소를 쓰는 계정이 있다면 새 비밀번호를 정하는 링크를 보냈습니다.",
    "auth.email_confirmed": "감사합니다. 이메일 주소가 확인되었습니다.",
    "auth.password_changed": "비밀번호가 바뀌었습니다. 새 비밀번호로 로그인해 주세요.",
    "me.erasing": "계정과 모든 사진, 모델, 인물 사진을 삭제하고 있습니다.",
    "consent.withdrawn": (
        "동의를 철회했습니다. 사진, 포즈 사진, 닮은꼴 모델을 삭제했습니다. 인물 사진과 계정은 남습니다."
    ),
    "consent.withdrawn_jobs": (
        "동의를 철회했습니다. 사진, 포즈 사진, 닮은꼴 모델을 삭제하고 진행 중이던 학습과 인물 사진 작업을 "
        "취소했습니다. 인물 사진과 계정은 남습니다."
    ),
    "consent.withdrawn_nothing": (
        "동의를 철회했습니다. 삭제할 사진, 포즈 사진, 닮은꼴 모델은 없었습니다. 인물 사진과 계정은 남습니다."
    ),
    "consent.not_given": (
        "철회할 동의가 없습니다. 이 계정은 얼굴 사진 처리에 동의하지 않았거나 이미 철회했고, "
        "보관된 얼굴 사진도 없습니다. 인물 사진과 계정은 남습니다."
    ),
    "consent.required": (
        '먼저 얼굴 사진 처리에 동의해 주세요. POST /v1/me/consent에 {{"accept": true}}를 보내면 동의합니다.'
    ),
    "not_found.job": "작업을 찾을 수 없습니다.",
    "not_found.pose": "자세 사진을 찾을 수 없습니다.",
    "not_found.likeness": "닮은꼴 모델을 찾을 수 없습니다.",
    "not_found.portrait": "인물 사진을 찾을 수 없습니다.",
    "not_found.photo": "사진을 찾을 수 없습니다.",
    "not_found.style_preview": "이 스타일의 미리보기가 없습니다.",
    "not_found.job_portraits": "이 작업의 인물 사진을 찾을 수 없습니다.",
    "not_found.metrics": "공개 포트에서는 지표를 제공하지 않습니다.",
    "not_found.page": "웹 페이지가 준비되지 않았습니다. /docs를 보세요.",
    "http.404": "이 주소에는 아무것도 없습니다.",
    "http.405": "이 주소는 {method} 요청을 받지 않습니다. 받는 요청: {allowed}.",
    "http.other": "요청에 답할 수 없습니다({status}).",
    "http.body_unreadable": (
        "요청 본문을 읽을 수 없습니다. JSON은 UTF-8 텍스트로 Content-Type: application/json 헤더와 함께"
        "(중첩은 수백 단계 이내로), 파일은 multipart/form-data 양식으로 보내 주세요."
    ),
    "validation.not_json": "요청 본문을 JSON으로, Content-Type: application/json 헤더와 함께 보내 주세요.",
    "request.too_large": "요청 본문이 이 API가 받는 크기({size})보다 큽니다.",
    "request.too_slow": "요청 본문이 {seconds}초 안에 도착하지 않았습니다. 다시 보내 주세요.",
    "validation.fields": "다음 항목을 확인해 주세요: {fields}.",
    "validation.more": " 외 {count}개",
    "validation.json": "요청 본문이 올바른 JSON이 아닙니다{at}.",
    "validation.json_at": "({at}번째 문자)",
    "outage.database": "데이터베이스가 응답하지 않습니다. 1분 뒤에 다시 시도해 주세요.",
    "outage.busy": "지금 요청이 많습니다. 몇 초 뒤에 다시 시도해 주세요.",
    "outage.redis": "작업 대기열이 응답하지 않습니다. 1분 뒤에 다시 시도해 주세요.",
    "outage.storage": "저장소가 응답하지 않습니다. 1분 뒤에 다시 시도해 주세요.",
    "outage.store_failing": "지금 저장소가 파일을 저장하거나 읽지 못합니다. 1분 뒤에 다시 시도해 주세요.",
    "system.demo": (
        "데모 모델: 'tiny' 설정은 설정 파일로 만든 작은 무작위 가중치 모델을 쓰므로 사진이 잡음처럼 "
        "보입니다. 실제 인물 사진은 MODEL_PRESET=sd15와 실제 가중치로 만드세요."
    ),
    "system.real": "실제 모델을 불러왔습니다.",
    "stage.queued": "대기열에 있음",
    "stage.starting": "시작하는 중",
    "stage.retrying": "다시 시도하는 중",
    "stage.canceled": "취소됨",
    "stage.done": "끝남",
    "stage.downloading photos": "사진 가져오는 중",
    "stage.preprocessing": "사진 준비 중",
    "stage.training_step": "얼굴 학습 중({total}단계 중 {step}단계)",
    "stage.choosing the best checkpoint": "가장 좋은 결과 고르는 중",
    "stage.saving": "모델 저장 중",
    "stage.checking faces": "사진 확인 중",
    "stage.finding the pose": "자세 찾는 중",
    "stage.drawing the skeleton": "자세 그리는 중",
    "stage.account deleted": "계정 삭제됨",
    "stage.likeness deleted": "취소됨: 닮은꼴 모델이 삭제됨",
    "stage.consent withdrawn": "취소됨: 얼굴 사진 처리 동의가 철회됨",
    "stage.deleting files": "파일 삭제 중",
    "stage.deleting records": "기록 삭제 중",
    "stage.loading likeness": "닮은꼴 모델 불러오는 중",
    "stage.generating": "사진 그리는 중",
    "stage.portrait": "{style}: {step}",
    "stage.portrait.txt2img": "사진 그리는 중",
    "stage.portrait.detail": "얼굴 다듬는 중",
    "stage.portrait.beautify": "피부 톤과 색 고르는 중",
    "stage.portrait.detail2": "얼굴 한 번 더 다듬는 중",
    "stage.portrait.upscale": "큰 크기로 디테일 더하는 중",
    "stage.portrait.done": "끝남",
    "stage.working": "작업 중",
    # Job failures without values, by error code (the English is the worker's own sentence)
    "job.likeness_deleted": "이 닮은꼴 모델은 삭제되었습니다. 새로 학습해 주세요.",
    "job.likeness_not_ready": "이 닮은꼴 모델은 아직 준비되지 않았습니다.",
    "job.likeness_base_mismatch": (
        "이 닮은꼴 모델은 지금과 다른 기본 모델로 학습되었습니다. 다시 학습해 주세요."
    ),
    "job.likeness_files_missing": "이 닮은꼴 모델의 LoRA 파일이 없습니다. 다시 학습해 주세요.",
    "job.pose_deleted": "자세 사진이 삭제되었습니다. 다른 자세를 골라 주세요.",
    "job.pose_not_ready": "이 자세 사진은 쓸 수 없습니다.",
    "job.unknown_style": "없는 스타일입니다. 다른 스타일을 골라 주세요.",
    "job.no_styles": "스타일을 하나 이상 고르세요.",
    "job.bad_count": "스타일마다 1장부터 {max}장까지 요청할 수 있습니다.",
    "job.foreign_object": "저장된 파일이 주인의 영역 밖을 가리킵니다.",
    "job.bad_input": "작업 입력이 올바르지 않습니다.",
    "job.unknown_template": "없는 메일 양식입니다: {template}.",
    "job.daily_limit": "오늘 만들 수 있는 사진 수를 넘었습니다. 더 적게 요청하거나 내일 다시 시도해 주세요.",
    "job.worker_restarting": "사진을 만드는 장비에 문제가 생겨 다시 시작합니다. 사진은 다시 만들어집니다.",
    "job.internal_error": (
        "여러 번 시도했지만 작업을 끝내지 못해 멈췄습니다. "
        "사용자 잘못이 아닙니다. 잠시 뒤에 다시 시도해 주세요."
    ),
    "job.worker_lost": "작업하던 장비가 여러 번 멈춰서 시도를 멈췄습니다. 잠시 뒤에 다시 시도해 주세요.",
    # A job waiting out an outage (shared/jobs/retry.py); the English names the wait in seconds
    "job.storage_unavailable": "저장소가 응답하지 않습니다. 잠시 뒤에 자동으로 다시 시도합니다.",
    "job.database_unavailable": "데이터베이스가 응답하지 않습니다. 잠시 뒤에 자동으로 다시 시도합니다.",
    "job.redis_unavailable": "작업 대기열이 응답하지 않습니다. 잠시 뒤에 자동으로 다시 시도합니다.",
    "job.mail_unavailable": "메일 서버가 응답하지 않습니다. 잠시 뒤에 자동으로 다시 보냅니다.",
    # Why a photo or a pose photo was rejected (Photo.reason, PosePhoto.reason), by reason code
    "photo.no_face": "얼굴을 찾지 못했습니다. 얼굴이 잘 보이는 사진을 올려 주세요.",
    "photo.multiple_faces": "얼굴이 {count}개 있습니다. 나 혼자 나온 사진을 올려 주세요.",
    "photo.too_small": (
        "사진이 너무 작습니다({width}x{height}픽셀). 가로와 세로가 {min}픽셀 이상이고 "
        "얼굴이 크게 나온 사진을 올려 주세요."
    ),
    "photo.face_too_small": "얼굴이 너무 작습니다. 더 가까이에서 찍은 사진이나 큰 사진을 올려 주세요.",
    "photo.face_too_small_px": (
        "얼굴이 너무 작습니다({size}픽셀, {need}픽셀 필요). "
        "더 가까이에서 찍은 사진이나 큰 사진을 올려 주세요."
    ),
    "photo.face_blurry_measured": (
        "얼굴이 흐립니다(선명도 {sharpness}, {need} 필요). 더 선명한 사진을 올려 주세요."
    ),
    "photo.too_blurry": (
        "얼굴이 흐립니다. 카메라가 흔들리지 않게 잡고 얼굴에 초점을 맞춰(휴대폰에서는 화면의 얼굴을 눌러) "
        "선명한 사진을 올려 주세요."
    ),
    "photo.photo_blurry": (
        "사진이 너무 흐려서 얼굴을 찾을 수 없습니다. 카메라가 흔들리지 않게 잡고 얼굴에 초점을 맞춘 "
        "선명한 사진을 올려 주세요."
    ),
    "photo.too_dark": (
        "사진이 너무 어두워서 얼굴이 보이지 않습니다. 더 밝은 곳에서(창이나 조명을 바라보고) 다시 찍거나 "
        "더 밝은 사진을 올려 주세요."
    ),
    "photo.face_covered": (
        "얼굴은 보이지만 눈이 보이지 않습니다. 선글라스, 머리카락, 손, 마스크에 가려졌거나 얼굴이 "
        "돌아가 있을 수 있습니다. 두 눈이 보이게 카메라를 바라본 사진을 올려 주세요."
    ),
    "photo.identity_mismatch": (
        "다른 사진 속 사람과 다른 사람으로 보입니다. 이 사진을 지우고 본인 사진만 남겨 주세요."
    ),
    "photo.duplicate": "이미 올린 사진과 같은 사진입니다. 한 장으로만 셉니다.",
    "photo.check_failed": "이 사진을 검사하지 못했습니다. 다시 올려 주세요.",
    "pose.extract_failed": "이 사진에서 포즈를 찾지 못했습니다. 삭제하고 다시 올려 주세요.",
    "pose.extract_canceled": "이 사진의 포즈 찾기가 취소되었습니다. 삭제하고 다시 올려 주세요.",
    "pose.no_person": "이 사진에서 사람을 찾지 못했습니다. 한 사람이 잘 보이는 사진을 골라 주세요.",
    "pose.too_little_body": "사람이 너무 조금 보입니다. 머리와 두 어깨가 모두 나온 사진이어야 합니다.",
    "pose.several_people": (
        "이 사진에는 여러 사람이 있어 가장 크게 나온 사람의 자세를 씁니다"
        "(미리보기에 자세를 그려 두었습니다). "
        "다른 자세를 원하면 한 사람만 나온 사진을 고르세요."
    ),
}

CATALOGS: dict[str, Catalog] = {"en": EN, "ko": KO}


# A name the client chose (a body field's key, an upload's file name) is echoed at most this long.
ECHO_MAX_CHARS = 64


def clipped(text: str, limit: int = ECHO_MAX_CHARS) -> str:
    """`text` as an answer may echo it: its first `limit` characters and "…" when longer (a
    3000-character field name made a 6 KB 422)."""
    return text if len(text) <= limit else text[:limit] + "…"


def knows(key: str, locale: str = DEFAULT_LOCALE) -> bool:
    """Whether `key` has a template in `locale` (no English fallback)."""
    return key in CATALOGS.get(locale, {})


def say(key: str, locale: str = DEFAULT_LOCALE, /, **values: Any) -> str:
    """The sentence `key` in `locale` (English if that language lacks it), `values` filled in.
    Raises KeyError for a key that English does not know either."""
    catalog = CATALOGS.get(locale, EN)
    template = catalog[key] if key in catalog else EN[key]
    if isinstance(template, dict):
        template = template["one" if values.get("count") == 1 else "other"]
    return template.format(**values)


@dataclass(frozen=True)
class Sentence:
    """A sentence of the catalogue by key, with its values: stored as JSON, shown in any language."""

    key: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def render(self, locale: str = DEFAULT_LOCALE) -> str:
        return say(self.key, locale, **self.values)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "values": dict(self.values)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sentence:
        return cls(str(data["key"]), dict(data.get("values") or {}))


def join(sentences: Iterable[Sentence], locale: str = DEFAULT_LOCALE) -> str:
    return " ".join(s.render(locale) for s in sentences)


def negotiate(accept_language: str | None) -> str:
    """The best of LOCALES for an `Accept-Language` header (q-values, RFC 9110 §12.5.4; a region
    such as `ko-KR` counts as its language); DEFAULT_LOCALE when none fits.
    `"ko-KR,ko;q=0.9,en;q=0.8"` -> `"ko"`; `"fr, en;q=0.5"` -> `"en"`; `None` -> `"en"`."""
    best, best_q = DEFAULT_LOCALE, 0.0
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        language = tag.strip().lower().split("-")[0]
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= position * 1e-6  # equal weights: the earlier tag wins
        if language in LOCALES and q > best_q:
            best, best_q = language, q
    return best


# The language of the request being answered (the gateway sets it per request).
current_locale: contextvars.ContextVar[str] = contextvars.ContextVar("locale", default=DEFAULT_LOCALE)


def job_error_message(
    error_code: str | None, error_message: str | None, result: Mapping[str, Any] | None, locale: str
) -> str | None:
    """A failed job's `error_message` in `locale`: from the stored sentences (`result.error_sentences`)
    if the worker left them, else the catalogue's `job.<error_code>` in that language, else the stored
    (English) text."""
    if error_message is None or locale == DEFAULT_LOCALE or error_code is None:
        return error_message
    stored = (result or {}).get("error_sentences") if isinstance(result, Mapping) else None
    if stored:
        try:
            return join((Sentence.from_json(s) for s in stored), locale)
        except (KeyError, TypeError, ValueError, IndexError):
            pass  # an older or unknown shape: fall through
    return by_code(f"job.{error_code}", error_message, locale)


def by_code(key: str, stored: str | None, locale: str) -> str | None:
    """A stored English sentence (a job's error, a photo's reason) shown in `locale`: the catalogue's
    `key` (e.g. `photo.too_small`) when that language has it and it needs no values, else `stored`."""
    if stored is None or locale == DEFAULT_LOCALE or not knows(key, locale):
        return stored
    try:
        return say(key, locale)
    except KeyError:  # the sentence needs values that were not stored
        return stored


# The labels workers write to Job.stage (shared/jobs/runner.py JobContext.progress): a fixed word
# ("saving"), "training step 12/400, about 3 min left" (services/trainer/train.py), or
# "<style's English name>: <pipeline stage>" (services/generator/tasks.py).
_TRAINING_STEP = re.compile(r"training step (\d+)/(\d+)(?:,.*)?")
_PORTRAIT_STEP = re.compile(r"(.+): (\w+)")


def stage_text(stage: str | None, locale: str = DEFAULT_LOCALE) -> str | None:
    """A job's stage label (`Job.stage`, the worker's words) as a phrase for people in `locale`:
    `"training step 2/36, about 1 min left"` -> `"learning your likeness (step 2 of 36)"` (the time
    left is the page's own estimate, not repeated here); `"Black-and-white: txt2img"` ->
    `"흑백: 사진 그리는 중"` in Korean. A label not in the catalogue gives `stage.working`, never the
    raw English label. None for None."""
    if not stage:
        return None
    if knows(f"stage.{stage}", locale) or (locale == DEFAULT_LOCALE and f"stage.{stage}" in EN):
        return say(f"stage.{stage}", locale)
    if m := _TRAINING_STEP.fullmatch(stage):
        return say("stage.training_step", locale, step=int(m[1]), total=int(m[2]))
    if (m := _PORTRAIT_STEP.fullmatch(stage)) and f"stage.portrait.{m[2]}" in EN:
        from shared.styles import load_styles  # the styles' names in every language

        names = {s.name.en: s.name.get(locale) for s in load_styles().values()}
        if m[1] in names:
            step = say(f"stage.portrait.{m[2]}", locale)
            return say("stage.portrait", locale, style=names[m[1]], step=step)
    return say("stage.working", locale)
