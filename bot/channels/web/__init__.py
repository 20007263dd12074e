"""The aiohttp application: health, the chat socket and widget, the agent console, the REST API."""
