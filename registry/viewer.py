"""The session viewer: a static page at ``/ui`` over the registry's own read endpoints.

``registry/ui/`` holds plain HTML, CSS and one JavaScript module (no build step, nothing
fetched from elsewhere). The page reads ``GET /sessions``, ``GET /sessions/{id}`` and the
SSE log ``GET /sessions/{id}/events``, and listens to ``GET /changes`` to refresh its list;
it adds no data endpoint. Every string from a log is inserted as text, and the
Content-Security-Policy allows scripts and styles from this origin only.
"""

from __future__ import annotations

import hashlib
import html
import logging
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, HTTPException, Request, Response

#: The files served, with their content types.
FILES: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: Unversioned file names: browsers keep them but revalidate (ETag) before each use.
CACHE_CONTROL = "no-cache"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_ROOT_MARK = b"__ROOT__"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str


def _load() -> dict[str, _Asset]:
    folder = resources.files("registry").joinpath("ui")
    return {name: _Asset(folder.joinpath(name).read_bytes(), t) for name, t in FILES.items()}


def viewer_router() -> APIRouter:
    """Routes serving the viewer: ``/ui``, ``/ui/`` and ``/ui/index.html`` (the page),
    ``/ui/{file}`` (its script and style).

    Without its files (a broken install) the registry still starts; ``/ui`` answers 503
    saying what to do.
    """
    router = APIRouter(include_in_schema=False)
    try:
        assets = _load()
    except OSError as exc:
        log.warning("session viewer files missing; /ui answers 503", extra={"error": str(exc)})
        missing = (
            f"the session viewer's files are missing ({exc}); reinstall scriptorium, whose "
            "package ships registry/ui/"
        )

        @router.get("/ui")
        @router.get("/ui/{name:path}")
        async def unavailable() -> Response:
            raise HTTPException(503, missing)

        return router

    @router.get("/ui")
    @router.get("/ui/")
    async def page(request: Request) -> Response:
        # Asset URLs are absolute, so /ui (no slash) works too; under a proxy's root_path
        # the page names its assets and the API below that path.
        root = html.escape(str(request.scope.get("root_path", "")).rstrip("/"))
        index = assets["index.html"]
        return _respond(request, index.body.replace(_ROOT_MARK, root.encode()), index.media_type)

    @router.get("/ui/{name}")
    async def asset(name: str, request: Request) -> Response:
        if name == "index.html":
            return await page(request)
        found = assets.get(name)
        if found is None:
            raise HTTPException(404, f"no file {name!r} in the session viewer; open /ui")
        return _respond(request, found.body, found.media_type)

    return router


def _respond(request: Request, body: bytes, media_type: str) -> Response:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "Cache-Control": CACHE_CONTROL,
        "ETag": etag,
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)
