"""The phone line of ``triage serve``: the SIP bridge with the speech engines and the brain."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from bot.channels.phone.brain import PhoneBrain
from bot.channels.phone.engines import open_call_engines
from bot.config.phone_lines import load_phone_lines
from bot.config.settings import Settings
from bot.errors import ConfigError
from bot.handoff.desk import Desk
from bot.packs.loader import KeyedSlot
from voice.sip.agent import SipUserAgent
from voice.sip.auth import DigestCredentials
from voice.sip.settings import SipSettings

log = logging.getLogger(__name__)


def sip_settings(settings: Settings) -> SipSettings:
    auth = (
        DigestCredentials(
            settings.sip_auth_realm, settings.sip_auth_user, settings.sip_auth_password
        )
        if settings.sip_auth_user
        else None
    )
    try:
        return SipSettings(
            host=settings.sip_host,
            port=settings.sip_port,
            advertised_host=settings.sip_advertised_host or None,
            rtp_port_min=settings.rtp_port_min,
            rtp_port_max=settings.rtp_port_max,
            max_calls=settings.sip_max_calls,
            allowed_sources=settings.sip_allowed_sources,
            auth=auth,
            auth_max_failures=settings.sip_auth_max_failures,
            auth_lockout_s=settings.sip_auth_lockout_s,
        )
    except ValueError as exc:  # names the field; the TRIAGE_SIP_* variables carry them
        raise ConfigError(f"SIP settings (TRIAGE_SIP_*, TRIAGE_RTP_*): {exc}") from None


def exposure_warning(settings: Settings) -> str | None:
    """A line reachable beyond this machine with no allow-list and no authentication lets
    anyone hold every call slot (and its speech recognition): say so at start-up."""
    if ipaddress.ip_address(settings.sip_host).is_loopback:
        return None
    if settings.sip_allowed_sources or settings.sip_auth_user:
        return None
    return (
        f"the phone line listens on {settings.sip_host} with neither TRIAGE_SIP_ALLOWED_SOURCES "
        "nor TRIAGE_SIP_AUTH_USER: anyone who reaches it can place calls"
    )


@asynccontextmanager
async def open_phone_line(
    settings: Settings, desk: Desk, keyed_slots: Mapping[str, KeyedSlot]
) -> AsyncIterator[SipUserAgent]:
    lines = load_phone_lines(settings.phone_file)
    brain = PhoneBrain(desk, lines, keyed_slots)
    sip = sip_settings(settings)
    warning = exposure_warning(settings)
    if warning:
        log.warning(warning)
    async with open_call_engines(
        brain,
        lines,
        models_dir=settings.models_dir,
        preferred_engine=settings.asr_engine,
        endpoint_silence_ms=settings.asr_endpoint_silence_ms,
        vosk_keep_warm=settings.vosk_keep_warm,
    ) as engines:
        agent = await SipUserAgent.start(sip, engines)
        try:
            yield agent
        finally:
            await agent.close()
