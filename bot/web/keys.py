"""Typed keys of the web application's and requests' state."""

from __future__ import annotations

import weakref

from aiohttp import web

from bot.core.desk import Desk
from bot.runtime import Runtime
from bot.web.auth import Principal
from bot.web.chat import ChatConfig
from bot.web.ratelimit import RateLimiter

RUNTIME = web.AppKey("runtime", Runtime)
DESK = web.AppKey("desk", Desk)
CHAT_CONFIG = web.AppKey("chat_config", ChatConfig)
CHAT_LIMITER = web.AppKey("chat_limiter", RateLimiter)
PRINCIPAL = web.RequestKey("principal", Principal)
# every open socket, closed with 1001 (going away) when the service shuts down
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
