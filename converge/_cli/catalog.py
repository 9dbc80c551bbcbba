"""The event catalog: JSON Schema of every registered event type, and an AsyncAPI 3.0
document of the streams, subjects and messages, so a consumer in any language can read
the streams.

Schemas come from the pydantic models of :mod:`events.types` (through the default
registry), so a new event type appears here once it is registered.
"""

from __future__ import annotations

from typing import Any

from events.base import Event
from events.codec import (
    HDR_ACTOR,
    HDR_CAUSATION_ID,
    HDR_CORRELATION_ID,
    HDR_EVENT_TYPE,
    HDR_EVENT_VERSION,
    HDR_MSG_ID,
    HDR_TRACEPARENT,
    default_registry,
)
from events.subjects import KNOWN_KINDS

__all__ = ["KIND_OF_PREFIX", "asyncapi_document", "event_schemas", "kind_of_type"]

#: Which stream kind holds the events of each type prefix (``task.claimed`` -> ``tasks``).
KIND_OF_PREFIX: dict[str, str] = {
    "task": "tasks",
    "pool": "pools",
    "decision": "decisions",
    "auction": "coord",
    "bid": "coord",
    "vote": "coord",
    "negotiation": "coord",
    "proposal": "coord",
    "delegation": "coord",
    "agent": "agents",
    "trust": "agents",
}

_SUBJECT_PARAMS: dict[str, str] = {
    "tasks": "tasks.{id}",
    "pools": "pools.{id}",
    "decisions": "decisions.{id}",
    "coord": "coord.{protocol}.{id}",
    "agents": "agents.{id}",
}


def kind_of_type(event_type: str) -> str:
    """Return the stream kind of ``event_type`` (``coord`` for protocols not listed)."""
    return KIND_OF_PREFIX.get(event_type.split(".", 1)[0], "coord")


def _event_classes() -> list[type[Event]]:
    classes = []
    for name in default_registry.types():
        cls = default_registry.get(name)
        if cls is not None:
            classes.append(cls)
    return classes


def _schema(cls: type[Event]) -> dict[str, Any]:
    schema = cls.model_json_schema(mode="serialization")
    schema["title"] = cls.type
    schema["description"] = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
    schema["x-converge-type"] = cls.type
    schema["x-converge-version"] = cls.version
    return schema


def event_schemas() -> list[dict[str, Any]]:
    """Return ``{type, version, stream, schema}`` for every registered event type."""
    return [
        {
            "type": cls.type,
            "version": cls.version,
            "stream": kind_of_type(cls.type),
            "schema": _schema(cls),
        }
        for cls in _event_classes()
    ]


def _message_name(event_type: str) -> str:
    return event_type.replace(".", "_")


def _headers_schema() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "type": "object",
        "required": [HDR_MSG_ID, HDR_EVENT_TYPE, HDR_EVENT_VERSION, "Content-Type"],
        "properties": {
            HDR_MSG_ID: {**text, "description": "The event id; JetStream's dedupe key."},
            HDR_EVENT_TYPE: {**text, "description": "The event type, e.g. task.claimed."},
            HDR_EVENT_VERSION: {**text, "description": "The event schema version."},
            "Content-Type": {"const": "application/json"},
            HDR_CORRELATION_ID: text,
            HDR_CAUSATION_ID: text,
            HDR_ACTOR: {**text, "description": "The acting agent's id."},
            HDR_TRACEPARENT: {**text, "description": "W3C trace context."},
        },
    }


def asyncapi_document(namespace: str = "converge", version: str = "0.1.0") -> dict[str, Any]:
    """Return an AsyncAPI 3.0 document of ``namespace``'s streams, subjects and events."""
    classes = _event_classes()
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {"EventHeaders": _headers_schema()}
    by_kind: dict[str, list[str]] = {}
    for cls in classes:
        name = _message_name(cls.type)
        schemas[name] = _schema(cls)
        messages[name] = {
            "name": cls.type,
            "title": cls.type,
            "summary": schemas[name]["description"],
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/EventHeaders"},
            "payload": {"$ref": f"#/components/schemas/{name}"},
            "x-converge-version": cls.version,
        }
        by_kind.setdefault(kind_of_type(cls.type), []).append(name)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for kind, names in by_kind.items():
        stream = f"{namespace.upper()}_{KNOWN_KINDS.get(kind, kind.upper())}"
        address = f"{namespace}.{_SUBJECT_PARAMS[kind]}"
        parameters = {
            p: {
                "description": f"The entity's {p} (ids that are not plain tokens are encoded "
                "as '~' + base64url)."
            }
            for p in ("protocol", "id")
            if "{" + p + "}" in address
        }
        channels[kind] = {
            "address": address,
            "title": stream,
            "description": f"JetStream stream {stream}: one subject per entity.",
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            **({"parameters": parameters} if parameters else {}),
        }
        operations[f"read_{kind}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{kind}"},
            "summary": f"Read or follow stream {stream}.",
            "messages": [{"$ref": f"#/channels/{kind}/messages/{n}"} for n in names],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "converge events",
            "version": version,
            "description": (
                "Every task, pool, decision, coordination and agent change of a converge "
                "network, as JSON events on NATS JetStream. The body is the event's fields "
                "(envelope and payload, flat); type and version are in the headers."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "Any NATS server with JetStream that converge writes to.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
