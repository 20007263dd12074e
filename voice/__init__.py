"""Telephony and speech (SIP/RTP bridge, ASR, TTS). Never imports ``bot``."""
