"""The chat page at ``/`` and the browser SDK at ``/sdk/sluice.js``, served from ``web/``.

The files are plain ES modules and CSS, used as they are (no build step), so what
the repository holds is what a browser runs. ``no-cache`` makes a browser revalidate
them (aiohttp answers 304 while they are unchanged), so a page never runs a stale SDK.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

WEB = Path(__file__).with_name("web")
REVALIDATE = {"Cache-Control": "no-cache"}


def _file(name: str) -> Handler:
    async def serve(request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB / name, headers=REVALIDATE)

    return serve


async def _to_chat(request: web.Request) -> web.Response:
    raise web.HTTPFound("/")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", _file("index.html"))
    app.router.add_get("/chat", _to_chat)
    app.router.add_get("/sdk/sluice.js", _file("sluice.js"))
    app.router.add_static("/ui/", WEB, append_version=False)
