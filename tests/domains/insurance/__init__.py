"""A second domain pack, for the tests: Assicurazioni Aurora (Aurora Insurance).

Two self-service flows (the state of a claim, a new claim) on the company's own back office over
HTTP, three queues (claims, policies, general), its own phone lines and Rasa data. It imports
nothing of the service but ``bot.domain``.
"""

from __future__ import annotations

from bot.domain import FlowAction

from . import flows, forms

ACTIONS: dict[str, FlowAction] = {**forms.ACTIONS, **flows.ACTIONS}

__all__ = ["ACTIONS"]
