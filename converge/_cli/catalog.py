"""The event catalog: JSON Schema of every registered event type, and an AsyncAPI 3.0
document of the streams, subjects and messages, so a consumer in any language can read
the streams.

Schemas come from the pydantic models of :mod:`events.types` (through the default
registry), so a new event type appears here once it is registered.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
import typer

import converge
from converge._cli.common import usage_error
from converge._cli.options import JsonOpt, NamespaceOpt
from converge._cli.output import print_json
from converge.errors import ConfigError
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
from events.subjects import KNOWN_KINDS, validate_namespace

__all__ = ["KIND_OF_PREFIX", "asyncapi_document", "event_schemas", "events_app", "kind_of_type"]

events_app = typer.Typer(
    help="The event catalog: JSON Schemas and an AsyncAPI document.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

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
    # the body leads with its type and version (events.codec), so a body alone says what it is
    schema["properties"] = {
        "type": {"const": cls.type, "title": "Type"},
        "version": {"const": cls.version, "title": "Version"},
        **schema.get("properties", {}),
    }
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


@events_app.command("schema")
def events_schema(
    event_type: Annotated[
        str | None, typer.Option("--type", help="Only this event type (e.g. task.claimed).")
    ] = None,
    as_json: JsonOpt = True,
) -> None:
    """Print the JSON Schema of every registered event type, with its type and version."""
    schemas = event_schemas()
    if event_type is not None:
        schemas = [s for s in schemas if s["type"] == event_type]
        if not schemas:
            usage_error(f"no event type {event_type!r}; see `converge events schema`")
    print_json(schemas)


@events_app.command("asyncapi")
def events_asyncapi(
    output_format: Annotated[
        Literal["yaml", "json"], typer.Option("--format", help="yaml or json.")
    ] = "yaml",
    namespace: NamespaceOpt = None,
) -> None:
    """Print an AsyncAPI 3.0 document of the streams, subjects and event messages."""
    try:
        ns = validate_namespace(namespace or "converge")
    except ConfigError as exc:
        usage_error(str(exc))
    document = asyncapi_document(ns, converge.__version__)
    if output_format == "json":
        typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    try:
        import yaml
    except ImportError:
        usage_error("YAML output needs PyYAML: pip install 'converge[cli]', or use --format json")
    typer.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)
