"""Persistence of record: conversations, messages, flow outcomes, handoffs, agents."""
