"""The aiohttp application: health, REST API and (later) chat and console."""
