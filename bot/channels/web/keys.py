"""Typed keys of the web application's and requests' state."""

from __future__ import annotations

import weakref

from aiohttp import web

from bot.channels.web.auth import Principal
from bot.channels.web.chat import ChatConfig
from bot.channels.web.ratelimit import RateLimiter
from bot.handoff.desk import Desk
from bot.runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)
DESK = web.AppKey("desk", Desk)
CHAT_CONFIG = web.AppKey("chat_config", ChatConfig)
CHAT_LIMITER = web.AppKey("chat_limiter", RateLimiter)
PRINCIPAL = web.RequestKey("principal", Principal)
# every open socket, closed with 1001 (going away) when the service shuts down
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
