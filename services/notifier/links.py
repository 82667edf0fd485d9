"""Links into the web page (a hash router, see services/gateway/static/app.js).

Tokens ride in the fragment (`#/verify?token=...`): browsers never send the fragment to a
server, so a token does not land in access logs or Referer headers.
"""

from urllib.parse import urlencode

# Which page a person should land on after a failure of each job kind.
FAILURE_ROUTES = {
    "photo_check": "photos",
    "train_likeness": "train",
    "generate_portraits": "styles",
}
# Failures that are fixed by uploading other photos.
PHOTO_PROBLEMS = frozenset({"too_few_photos", "no_face", "no_accepted_photos"})


def web_url(public_url: str, route: str = "", **query: str) -> str:
    """`web_url("https://x", "gallery", job="1")` -> "https://x/#/gallery?job=1"."""
    url = f"{public_url.rstrip('/')}/#/{route}"
    return f"{url}?{urlencode(query)}" if query else url


def failure_route(kind: str, error_code: str | None) -> str:
    if error_code in PHOTO_PROBLEMS:
        return "photos"
    return FAILURE_ROUTES.get(kind, "")
