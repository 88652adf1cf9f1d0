"""The API for programs: remove.bg-compatible ``/v1.0``, the native ``/api/v1``, keys, limits.

Both surfaces authenticate with API keys only (``X-Api-Key`` or ``Authorization: Bearer``): no
cookie is read or set, so no CSRF token is needed. Their views are thin like the page's: parse,
call :class:`~cutout.service.ImageService`, serialise; errors go to :mod:`cutout.web.errors`,
which renders them in each surface's own JSON shape.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from cutout.api import auth, docs, jobs, limits, native, removebg, wire
    from cutout.extensions import csrf

    auth.init_app(app)
    jobs.init_app(app)
    for bp in (removebg.bp, native.bp, docs.bp):
        csrf.exempt(bp)  # key-authenticated: no cookie, so nothing for CSRF to protect
        app.register_blueprint(bp)
    limiter = limits.init_app(app, (removebg.bp, native.bp))
    wire.init_app(app, limiter)  # body draining, CORS on /v1.0: what clients rely on
