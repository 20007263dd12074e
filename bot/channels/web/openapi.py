"""The OpenAPI 3.1 description of the REST API (served at ``/api/openapi.json``).

Written by hand next to the handlers; a test checks that every ``/api/`` route of the app is
described here and that the document validates.
"""

from __future__ import annotations

from typing import Any

from bot.handoff.state import HandoffState

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "invalid request",
        401: "not signed in",
        403: "forbidden or missing CSRF token",
        404: "not found",
        409: "conflict: the handoff's state does not allow it (another agent won)",
    }
    return {str(c): _ok(_ref("Error"), text[c]) for c in codes}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            JSON: {"schema": {"type": "object", "properties": properties, "required": required}}
        },
    }


HANDOFF_ID = {"name": "handoff_id", "in": "path", "required": True, "schema": {"type": "string"}}
CONVERSATION_ID = {
    "name": "conversation_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 64},
}
STRING = {"type": "string"}
HANDOFF = {"type": "object", "properties": {"handoff": _ref("HandoffSummary")}}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": responses, **extra}


def _handoff_action(summary: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op = _op(summary, {"200": _ok(HANDOFF), **_errors(400, 401, 403, 404, 409)})
    op["parameters"] = [HANDOFF_ID]
    if body is not None:
        op["requestBody"] = body
    return {"post": op}


def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {"error": STRING, "message": STRING},
            "required": ["error", "message"],
        },
        "Agent": {
            "type": "object",
            "properties": {
                "id": STRING,
                "name": STRING,
                "role": {"enum": ["agent", "supervisor"]},
                "queues": {"type": "array", "items": STRING},
                "presence": {"enum": ["available", "away", "offline"]},
            },
        },
        "HandoffSummary": {
            "type": "object",
            "properties": {
                "id": STRING,
                "conversation_id": STRING,
                "state": {"enum": [state.value for state in HandoffState]},
                "queue": STRING,
                "priority": {"type": "integer"},
                "channel": {"type": ["string", "null"]},
                "language": {"type": ["string", "null"]},
                "topic": STRING,
                "reason": STRING,
                "mode": {"enum": ["live", "callback"]},
                "waited_s": {"type": "integer"},
                "position": {"type": ["integer", "null"]},
                "offered_to": {"type": ["string", "null"]},
                "offer_expires_at": {"type": ["string", "null"], "format": "date-time"},
                "agent_id": {"type": ["string", "null"]},
                "customer": {
                    "type": "object",
                    "properties": {
                        "id": {"type": ["string", "null"]},
                        "name": {"type": ["string", "null"]},
                        "verified": {"type": "boolean"},
                    },
                },
                "intent": {"type": ["string", "null"]},
                "created_at": {"type": "string", "format": "date-time"},
            },
        },
        "Message": {
            "type": "object",
            "properties": {
                "seq": {"type": "integer"},
                "sender": {"enum": ["user", "bot", "agent", "system"]},
                "text": STRING,
                "buttons": {"type": "array", "items": {"type": "object"}},
                "at": {"type": "string", "format": "date-time"},
            },
        },
        "Envelope": {
            "type": "object",
            "description": "The handoff envelope, schema version 1 (see README), with its "
            "state_history",
            "properties": {"id": STRING, "schema_version": {"const": 1}},
        },
    }
    session = {"type": "object", "properties": {"agent": _ref("Agent"), "csrf_token": STRING}}
    paths: dict[str, Any] = {
        "/api/session": {
            "post": _op(
                "Sign in (sets the session cookie)",
                {"200": _ok(session), **_errors(400, 401)},
                requestBody=_body({"agent_id": STRING, "password": STRING, "token": STRING}, []),
                security=[],
            ),
            "get": _op("The signed-in agent and the CSRF token", {"200": _ok(session)}),
            "delete": _op("Sign out", {"204": {"description": "signed out"}}),
        },
        "/api/agents/me/presence": {
            "put": _op(
                "Set presence",
                {"200": _ok({"type": "object"}), **_errors(400, 401, 403)},
                requestBody=_body({"presence": {"enum": ["available", "away"]}}, ["presence"]),
            )
        },
        "/api/queues": {
            "get": _op(
                "Queues the caller serves with their waiting customers, and the caller's own",
                {"200": _ok({"type": "object"}), **_errors(401)},
            )
        },
        "/api/handoffs": {
            "get": _op(
                "List handoffs",
                {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {
                                "handoffs": {"type": "array", "items": _ref("HandoffSummary")}
                            },
                        }
                    ),
                    **_errors(400, 401, 403),
                },
                parameters=[
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"enum": ["waiting", HandoffState.CALLBACK_REQUESTED.value]},
                    },
                    {"name": "queue", "in": "query", "schema": STRING},
                ],
            )
        },
        "/api/handoffs/{handoff_id}": {
            "get": _op(
                "A handoff: summary, envelope, state events and messages",
                {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {
                                "handoff": _ref("HandoffSummary"),
                                "envelope": _ref("Envelope"),
                                "events": {"type": "array", "items": {"type": "object"}},
                                "messages": {"type": "array", "items": _ref("Message")},
                            },
                        }
                    ),
                    **_errors(401, 403, 404),
                },
                parameters=[HANDOFF_ID],
            )
        },
        "/api/handoffs/{handoff_id}/accept": _handoff_action("Accept a waiting customer"),
        "/api/handoffs/{handoff_id}/decline": _handoff_action("Decline an offer"),
        "/api/handoffs/{handoff_id}/messages": {
            "post": _op(
                "Send a message to the customer",
                {
                    "200": _ok({"type": "object", "properties": {"message": _ref("Message")}}),
                    **_errors(400, 401, 403, 404, 409),
                },
                parameters=[HANDOFF_ID],
                requestBody=_body({"text": STRING}, ["text"]),
            )
        },
        "/api/handoffs/{handoff_id}/typing": {
            "post": _op(
                "Show or hide the agent's typing indicator to the customer",
                {"204": {"description": "sent"}, **_errors(400, 401, 403, 404, 409)},
                parameters=[HANDOFF_ID],
                requestBody=_body({"on": {"type": "boolean"}}, ["on"]),
            )
        },
        "/api/handoffs/{handoff_id}/transfer": _handoff_action(
            "Transfer to another queue with a note",
            _body({"queue": STRING, "note": STRING}, ["queue"]),
        ),
        "/api/handoffs/{handoff_id}/close": _handoff_action(
            "Close with a disposition",
            _body(
                {
                    "disposition": {
                        "enum": ["resolved", "not_resolved", "follow_up", "wrong_queue", "spam"]
                    }
                },
                ["disposition"],
            ),
        ),
        "/api/handoffs/{handoff_id}/release": _handoff_action(
            "Hand the customer back to the bot", _body({"note": STRING}, [])
        ),
        "/api/conversations/{conversation_id}": {
            "get": _op(
                "A conversation and its (masked) messages",
                {"200": _ok({"type": "object"}), **_errors(401, 403, 404)},
                parameters=[CONVERSATION_ID],
            )
        },
        "/api/conversations/{conversation_id}/messages": {
            "post": _op(
                "Run one customer message through the bot",
                {"200": _ok({"type": "object"}), **_errors(400, 401)},
                parameters=[CONVERSATION_ID],
                requestBody=_body(
                    {
                        "text": STRING,
                        "language": {"enum": ["it", "en"]},
                        "channel": {"enum": ["api", "chat", "phone", "cli"]},
                    },
                    ["text"],
                ),
            )
        },
        "/api/metrics": {
            "get": _op(
                "Supervisor figures: queues, agents, containment, abandonment, handoff rate",
                {"200": _ok({"type": "object"}), **_errors(400, 401, 403)},
                parameters=[{"name": "hours", "in": "query", "schema": {"type": "number"}}],
            )
        },
        "/api/openapi.json": {
            "get": _op("This document", {"200": _ok({"type": "object"})}, security=[])
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "contact-triage API",
            "version": "1",
            "description": "Handoffs, conversations and metrics of the triage gateway. "
            "See docs/agent-api.md for the console WebSocket and the signed webhooks.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "triage_session",
                    "description": "state changes also need the X-CSRF-Token header",
                },
            },
        },
    }
