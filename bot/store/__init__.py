"""Persistence of record: customers, conversations, messages, flows, tickets, handoffs."""
