"""The words of every email, in English and Korean.

Strings are plain text (templates escape them) with `str.format` fields. A value may be a
dict with "one"/"other" forms chosen by the `count` field. A key missing in a language falls
back to English, so a new string can ship before its translation.
"""

from datetime import datetime
from typing import Any

from shared.i18n import DEFAULT_LOCALE, LOCALES
from shared.i18n import Catalog as Strings

__all__ = ["DEFAULT_LOCALE", "LOCALES", "Strings"]

EN: Strings = {
    "brand": "Portrait Studio",
    "greeting": "Hello,",
    "footer.automatic": "Portrait Studio sent this email automatically; replies are not read.",
    "footer.results_optin": (
        "You get this email because result emails are on for your account. "
        "You can turn them off in your settings:"
    ),
    "footer.settings": "Settings",
    "link_fallback": "If the button does not work, copy this address into your browser:",
    # Portraits ready
    "portraits_ready.subject": {
        "one": "Your portrait is ready",
        "other": "Your {count} portraits are ready",
    },
    "portraits_ready.preheader": "Your new portraits in {styles} are waiting for you.",
    "portraits_ready.heading": {
        "one": "Your portrait is ready",
        "other": "Your {count} portraits are ready",
    },
    "portraits_ready.intro": "We finished your portraits in {styles}. Here are the best ones:",
    "portraits_ready.more": {
        "one": "…and 1 more on the web page.",
        "other": "…and {count} more on the web page.",
    },
    "portraits_ready.cta": "See all your portraits",
    "portraits_ready.downloads": "Download",
    "portraits_ready.download_item": "{style}, portrait {number} ({width}×{height} PNG)",
    "portraits_ready.expiry": (
        "These download links work for {days} days, until {date}. After that, download them "
        "from the web page instead."
    ),
    "portraits_ready.alt": "{style} portrait {number}",
    # Training finished
    "training_finished.subject": "Your likeness is trained: time to make portraits",
    "training_finished.preheader": "Pick a few styles and we will create your portraits.",
    "training_finished.heading": "Training finished",
    "training_finished.body": {
        "one": "We trained your likeness on 1 of your photos.",
        "other": "We trained your likeness on {count} of your photos.",
    },
    "training_finished.next": "You can now create portraits of yourself in any of our styles.",
    "training_finished.cta": "Create portraits",
    # Job failed
    "job_failed.subject": "Something went wrong while {what}",
    "job_failed.preheader": "What happened and what you can do about it.",
    "job_failed.heading": "Something went wrong while {what}",
    "job_failed.what_happened": "What happened",
    "job_failed.what_to_do": "What you can do",
    "job_failed.cta": "Open Portrait Studio",
    "job_failed.what.photo_check": "checking your photos",
    "job_failed.what.train_likeness": "training your likeness",
    "job_failed.what.generate_portraits": "creating your portraits",
    "job_failed.what.erase_user": "deleting your data",
    "job_failed.what.other": "working on your request",
    "job_failed.reason.unknown": "We could not finish the job.",
    "job_failed.advice.too_few_photos": (
        "Upload a few more photos where your face is clear, well lit and looking at the camera, "
        "then start the training again."
    ),
    "job_failed.advice.no_face": ("Upload photos where your face is clearly visible, then start again."),
    "job_failed.advice.internal_error": (
        "This was not your fault. Please try again in a little while; your photos are safe."
    ),
    "job_failed.advice.other": (
        "Please try again from the web page. If it fails again, it is a problem on our side and "
        "we are already looking at it."
    ),
    # Verify email
    "verify_email.subject": "Confirm your email address",
    "verify_email.preheader": "One click and your Portrait Studio account is ready.",
    "verify_email.heading": "Confirm your email address",
    "verify_email.body": (
        "Welcome to Portrait Studio! Please confirm that this address is yours to finish "
        "setting up your account."
    ),
    "verify_email.cta": "Confirm my address",
    "verify_email.expiry": {
        "one": "The link works for the next hour.",
        "other": "The link works for the next {count} hours.",
    },
    "verify_email.ignore": "If you did not create an account, ignore this email; nothing happens.",
    # Reset password
    "reset_password.subject": "Reset your password",
    "reset_password.preheader": "Choose a new password for Portrait Studio.",
    "reset_password.heading": "Reset your password",
    "reset_password.body": (
        "Someone, hopefully you, asked to reset the password of your Portrait Studio account."
    ),
    "reset_password.cta": "Choose a new password",
    "reset_password.expiry": {
        "one": "The link works once, for the next minute.",
        "other": "The link works once, for the next {count} minutes.",
    },
    "reset_password.ignore": ("If it was not you, ignore this email: your password stays as it is."),
    # Someone tried to sign up with an existing address
    "signup_existing.subject": "Someone tried to sign up with your address",
    "signup_existing.preheader": "You already have an account with this address.",
    "signup_existing.heading": "You already have an account",
    "signup_existing.body": (
        "Someone tried to create a new Portrait Studio account with this email address, "
        "but you already have one."
    ),
    "signup_existing.if_you": ("If it was you, log in. If you forgot your password, you can reset it."),
    "signup_existing.login": "Log in",
    "signup_existing.reset": "Reset my password",
    "signup_existing.ignore": "If it was not you, ignore this email; your account is unchanged.",
    # Data erased
    "data_erased.subject": "Your data was deleted",
    "data_erased.preheader": "Your Portrait Studio account and everything in it are gone.",
    "data_erased.heading": "Your data was deleted",
    "data_erased.body": (
        "As you asked, we deleted your Portrait Studio account: your photos, your trained "
        "likenesses, your portraits and every record about you."
    ),
    "data_erased.last": (
        "This is the last email you will get from us, and we do not keep this address after sending it."
    ),
    "data_erased.welcome_back": "If you want to come back one day, you can create a new account.",
}

KO: Strings = {
    "brand": "Portrait Studio",
    "greeting": "안녕하세요.",
    "footer.automatic": "Portrait Studio에서 자동으로 보낸 메일입니다. 회신은 확인하지 않습니다.",
    "footer.results_optin": ("결과 알림 메일을 켜 두셔서 이 메일을 받으셨습니다. 설정에서 끌 수 있습니다:"),
    "footer.settings": "설정",
    "link_fallback": "버튼이 작동하지 않으면 이 주소를 브라우저에 붙여 넣으세요:",
    "portraits_ready.subject": "인물 사진 {count}장이 완성되었습니다",
    "portraits_ready.preheader": "{styles} 스타일의 새 인물 사진이 기다리고 있습니다.",
    "portraits_ready.heading": "인물 사진 {count}장이 완성되었습니다",
    "portraits_ready.intro": "{styles} 스타일로 인물 사진을 완성했습니다. 가장 잘 나온 사진입니다:",
    "portraits_ready.more": "…나머지 {count}장은 웹 페이지에서 볼 수 있습니다.",
    "portraits_ready.cta": "인물 사진 모두 보기",
    "portraits_ready.downloads": "다운로드",
    "portraits_ready.download_item": "{style}, {number}번 사진 ({width}×{height} PNG)",
    "portraits_ready.expiry": (
        "다운로드 링크는 {days}일 동안, {date}까지 유효합니다. 그 후에는 웹 페이지에서 내려받으세요."
    ),
    "portraits_ready.alt": "{style} 인물 사진 {number}",
    "training_finished.subject": "얼굴 모델 학습이 끝났습니다. 이제 인물 사진을 만들어 보세요",
    "training_finished.preheader": "스타일을 고르시면 인물 사진을 만들어 드립니다.",
    "training_finished.heading": "학습이 끝났습니다",
    "training_finished.body": "회원님의 사진 {count}장으로 얼굴 모델을 학습했습니다.",
    "training_finished.next": "이제 원하는 스타일로 회원님의 인물 사진을 만들 수 있습니다.",
    "training_finished.cta": "인물 사진 만들기",
    "job_failed.subject": "{what} 중에 문제가 생겼습니다",
    "job_failed.preheader": "무슨 일이 있었는지, 어떻게 하면 되는지 알려 드립니다.",
    "job_failed.heading": "{what} 중에 문제가 생겼습니다",
    "job_failed.what_happened": "무슨 일이 있었나요",
    "job_failed.what_to_do": "이렇게 해 보세요",
    "job_failed.cta": "Portrait Studio 열기",
    "job_failed.what.photo_check": "사진 확인",
    "job_failed.what.train_likeness": "얼굴 모델 학습",
    "job_failed.what.generate_portraits": "인물 사진 생성",
    "job_failed.what.erase_user": "데이터 삭제",
    "job_failed.what.other": "요청 처리",
    "job_failed.reason.unknown": "작업을 끝내지 못했습니다.",
    "job_failed.reason.too_few_photos": "얼굴이 선명하게 나온 사진이 충분하지 않았습니다.",
    "job_failed.reason.no_face": "사진에서 얼굴을 찾지 못했습니다.",
    "job_failed.advice.too_few_photos": (
        "얼굴이 선명하고 밝게 나온, 카메라를 바라보는 사진을 몇 장 더 올린 다음 학습을 다시 시작해 주세요."
    ),
    "job_failed.advice.no_face": "얼굴이 잘 보이는 사진을 올린 다음 다시 시작해 주세요.",
    "job_failed.advice.internal_error": (
        "회원님 잘못이 아닙니다. 잠시 후 다시 시도해 주세요. 사진은 안전하게 보관되어 있습니다."
    ),
    "job_failed.advice.other": (
        "웹 페이지에서 다시 시도해 주세요. 또 실패한다면 저희 쪽 문제이며, 이미 살펴보고 있습니다."
    ),
    "verify_email.subject": "이메일 주소를 확인해 주세요",
    "verify_email.preheader": "한 번만 누르면 Portrait Studio 계정이 준비됩니다.",
    "verify_email.heading": "이메일 주소를 확인해 주세요",
    "verify_email.body": (
        "Portrait Studio에 오신 것을 환영합니다! 계정 만들기를 마치려면 이 주소가 회원님의 "
        "주소인지 확인해 주세요."
    ),
    "verify_email.cta": "이메일 주소 확인",
    "verify_email.expiry": "이 링크는 앞으로 {count}시간 동안 사용할 수 있습니다.",
    "verify_email.ignore": ("계정을 만든 적이 없다면 이 메일을 무시하세요. 아무 일도 일어나지 않습니다."),
    "reset_password.subject": "비밀번호를 재설정하세요",
    "reset_password.preheader": "Portrait Studio의 새 비밀번호를 정하세요.",
    "reset_password.heading": "비밀번호 재설정",
    "reset_password.body": "Portrait Studio 계정의 비밀번호 재설정 요청이 있었습니다.",
    "reset_password.cta": "새 비밀번호 정하기",
    "reset_password.expiry": "이 링크는 앞으로 {count}분 동안 한 번만 사용할 수 있습니다.",
    "reset_password.ignore": ("본인이 요청하지 않았다면 이 메일을 무시하세요. 비밀번호는 바뀌지 않습니다."),
    "signup_existing.subject": "회원님의 주소로 가입 시도가 있었습니다",
    "signup_existing.preheader": "이 주소로 만든 계정이 이미 있습니다.",
    "signup_existing.heading": "이미 계정이 있습니다",
    "signup_existing.body": (
        "누군가 이 이메일 주소로 Portrait Studio 계정을 새로 만들려고 했지만, 이 주소로 만든 "
        "계정이 이미 있습니다."
    ),
    "signup_existing.if_you": (
        "본인이라면 로그인해 주세요. 비밀번호가 기억나지 않으면 재설정할 수 있습니다."
    ),
    "signup_existing.login": "로그인",
    "signup_existing.reset": "비밀번호 재설정",
    "signup_existing.ignore": "본인이 아니라면 이 메일을 무시하세요. 계정은 그대로입니다.",
    "data_erased.subject": "데이터가 삭제되었습니다",
    "data_erased.preheader": "Portrait Studio 계정과 모든 데이터가 삭제되었습니다.",
    "data_erased.heading": "데이터가 삭제되었습니다",
    "data_erased.body": (
        "요청하신 대로 Portrait Studio 계정을 삭제했습니다. 사진, 학습된 얼굴 모델, 인물 사진과 "
        "회원님에 관한 모든 기록이 삭제되었습니다."
    ),
    "data_erased.last": ("저희가 보내는 마지막 메일이며, 이 메일을 보낸 뒤에는 이 주소를 보관하지 않습니다."),
    "data_erased.welcome_back": "언젠가 다시 오고 싶으시면 새 계정을 만드시면 됩니다.",
}

CATALOG: dict[str, Strings] = {"en": EN, "ko": KO}

_MONTHS_EN = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def normalize_locale(locale: str | None) -> str:
    """'ko-KR', 'ko_kr' and 'KO' mean Korean; anything unknown means English."""
    if not locale:
        return DEFAULT_LOCALE
    lang = locale.replace("_", "-").split("-")[0].lower()
    return lang if lang in CATALOG else DEFAULT_LOCALE


class Translator:
    """`t(key, **fields)` for one locale."""

    def __init__(self, locale: str | None):
        self.locale = normalize_locale(locale)

    def __call__(self, key: str, **fields: Any) -> str:
        value = CATALOG[self.locale].get(key, EN.get(key))
        if value is None:
            raise KeyError(f"no string {key!r} in the email catalog")
        if isinstance(value, dict):
            value = value["one" if fields.get("count") == 1 else "other"]
        return value.format(**fields)

    def has(self, key: str) -> bool:
        return key in CATALOG[self.locale] or key in EN

    def has_own(self, key: str) -> bool:
        """True when this locale itself has the string (no English fallback)."""
        return key in CATALOG[self.locale]

    def date(self, moment: datetime) -> str:
        """A calendar date people read without thinking (UTC)."""
        if self.locale == "ko":
            return f"{moment.year}년 {moment.month}월 {moment.day}일"
        return f"{_MONTHS_EN[moment.month - 1]} {moment.day}, {moment.year}"

    def join(self, items: list[str]) -> str:
        """'A', 'A and B', 'A, B and C' (Korean: 'A, B, C')."""
        if self.locale == "ko" or len(items) < 2:
            return ", ".join(items)
        return ", ".join(items[:-1]) + " and " + items[-1]
