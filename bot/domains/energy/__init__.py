"""The sample domain pack: Luce e Rete, an Italian energy and broadband supplier.

Five self-service flows (balance, meter reading, outage, contact details, ticket status) on an
embedded demo back office; routing, queues and phone lines in the YAML files beside this one.
"""

from __future__ import annotations

from bot.domain import FlowAction

from . import flows, forms
from .backoffice import embedded_back_office

ACTIONS: dict[str, FlowAction] = {**forms.ACTIONS, **flows.ACTIONS}

__all__ = ["ACTIONS", "embedded_back_office"]
