"""The channels customers and agents come through: the web (chat, console, REST API) and the
phone line."""
