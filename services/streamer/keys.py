"""The streamer's typed app state, shared by its native and OpenAI-compatible surfaces."""

from __future__ import annotations

from aiohttp import web

from libs.common.store import StreamStore
from libs.common.stream_control import StreamControl
from services.streamer.hub import Hub

HUB = web.AppKey("hub", Hub)
STORE = web.AppKey("store", StreamStore)
CONTROL = web.AppKey("control", StreamControl)
