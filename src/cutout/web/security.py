"""Security headers and a session cookie that is Secure whenever the request came over HTTPS."""

from __future__ import annotations

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",  # no inline script, no CDN
        "style-src 'self'",
        "img-src 'self' blob: data:",  # blob: for the upload preview
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
#: Powerful browser features: none of them for anyone, but for the key panel's copy button.
PERMISSIONS = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer", "autoplay", "bluetooth", "camera", "display-capture", "geolocation",
        "gyroscope", "hid", "magnetometer", "microphone", "midi", "payment",
        "publickey-credentials-get", "screen-wake-lock", "serial", "usb", "xr-spatial-tracking",
    )
) + ", clipboard-write=(self)"  # fmt: skip
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": PERMISSIONS,
}


class HttpsAwareSessionInterface(SecureCookieSessionInterface):
    """Mark the session cookie Secure when the request is HTTPS (directly or via ProxyFix)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or bool(app.config["SESSION_COOKIE_SECURE"])


def init_app(app: Flask) -> None:
    app.session_interface = HttpsAwareSessionInterface()
    app.after_request(_add_headers)


def _add_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if "Cache-Control" not in response.headers:
        # Pages and JSON are per user (the cookie) and per audience (Accept: HTML or JSON):
        # no cache may keep them. Responses that set their own rules keep them: the images'
        # private ETag caching, static files.
        response.headers["Cache-Control"] = "private, no-store"
        response.vary.update(("Cookie", "Accept"))
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response
