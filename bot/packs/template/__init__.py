"""The {{title}} domain pack: one self-service flow (the status of a case) on the company's
back office over HTTP; routing, queues and phone lines in the YAML files beside this one.

Where to add a flow (``triage domain check`` lists whatever is still missing):

1. its code: a module beside ``case_status.py`` with its form validator and its flow action,
   both added to ``ACTIONS`` below;
2. its intent and examples in ``nlu_data/data/nlu/<lang>.yml`` and ``nlu_data/heldout/``; its
   form, slots, actions and responses in ``nlu_data/domain/``; its rules in
   ``nlu_data/data/flows.yml``;
3. its route (``{flow: NAME}``) and its ``on_failure`` queue in ``routing.yml``; the back-office
   operations it calls in ``pack.yml``.

A pack imports only ``bot.domain`` of the service.
"""

from __future__ import annotations

from bot.domain import FlowAction

from . import case_status

ACTIONS: dict[str, FlowAction] = {**case_status.ACTIONS}

__all__ = ["ACTIONS"]
