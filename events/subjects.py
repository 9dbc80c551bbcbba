"""Subjects, subject tokens and stream names.

Subjects given to an event log are *relative* to its namespace:
``"tasks.<task_id>"``, ``"coord.auction.<auction_id>"``. The first token is the
stream *kind*; the log prefixes the namespace (``converge.tasks.<id>``) and
stores the kind in stream ``<NAMESPACE>_<KIND>`` (kind ``coord`` is stream
``<NAMESPACE>_COORDINATION``).

Entity ids that are not plain tokens (anything beyond ``A-Z a-z 0-9 _ -``: dots,
spaces, wildcards, non-ASCII...) are encoded as ``~`` + unpadded base64url of
their UTF-8 bytes, never rejected and never silently altered; plain ids never
contain ``~``, so the encoding cannot collide with them.
"""

from __future__ import annotations

import base64
import binascii
import re

from converge.errors import ConfigError

__all__ = [
    "KNOWN_KINDS",
    "decode_token",
    "encode_token",
    "is_literal",
    "kind_of",
    "split_subject",
    "stream_name",
    "subject",
    "subject_matches",
    "validate_filter",
    "validate_namespace",
    "validate_subject",
]

_PLAIN = re.compile(r"[A-Za-z0-9_-]+\Z")
_KIND = re.compile(r"[a-z0-9_-]+\Z")
_NAMESPACE = re.compile(r"[A-Za-z0-9_-]+\Z")
_TOKEN_BAD = re.compile(r"[\s.*>\x00]")
ENCODED_PREFIX = "~"

#: The kinds with named streams; any other kind gets ``<NS>_<KIND>`` on demand.
KNOWN_KINDS: dict[str, str] = {
    "tasks": "TASKS",
    "pools": "POOLS",
    "decisions": "DECISIONS",
    "coord": "COORDINATION",
    "agents": "AGENTS",
}


def encode_token(value: str) -> str:
    """Return ``value`` as a valid NATS subject token (itself when plain)."""
    if not isinstance(value, str):
        raise ConfigError(f"subject ids must be strings, not {type(value).__name__}: {value!r}")
    if _PLAIN.match(value):
        return value
    encoded = base64.urlsafe_b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii")
    return ENCODED_PREFIX + encoded.rstrip("=")


def decode_token(token: str) -> str:
    """Return the id a token encodes (the inverse of :func:`encode_token`)."""
    if not token.startswith(ENCODED_PREFIX):
        return token
    raw = token[len(ENCODED_PREFIX) :]
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode(
            "utf-8", "surrogatepass"
        )
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"subject token {token!r} is not a valid encoded id") from exc


def validate_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ConfigError(
            f"stream kind {kind!r} must be lower-case letters, digits, '_' or '-' "
            "(e.g. 'tasks', 'coord')"
        )
    return kind


def subject(kind: str, *ids: str) -> str:
    """Return the relative subject ``<kind>.<id>...``, encoding ids that are not plain tokens.

    ``subject("tasks", task_id)``; ``subject("coord", "auction", auction_id)``.
    Raises :class:`ConfigError` for an invalid kind or a non-string id.
    """
    validate_kind(kind)
    if not ids:
        raise ConfigError(f"subject({kind!r}) needs at least one id")
    return ".".join([kind, *(encode_token(i) for i in ids)])


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` or raise :class:`ConfigError` when it is not a plain token."""
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ConfigError(
            f"namespace {namespace!r} must be letters, digits, '_' or '-' (e.g. 'converge')"
        )
    return namespace


def split_subject(rel_subject: str) -> list[str]:
    return rel_subject.split(".")


def kind_of(rel_subject: str) -> str:
    """Return the stream kind (first token) of a relative subject."""
    return rel_subject.split(".", 1)[0]


def validate_subject(rel_subject: str) -> str:
    """Check a relative subject for an append: a valid kind, then non-wildcard tokens.

    Raises :class:`ConfigError` naming the problem (use :func:`subject` to build one).
    """
    if not isinstance(rel_subject, str) or not rel_subject:
        raise ConfigError(f"subject {rel_subject!r} must be a non-empty string like 'tasks.<id>'")
    tokens = rel_subject.split(".")
    validate_kind(tokens[0])
    if len(tokens) < 2:
        raise ConfigError(
            f"subject {rel_subject!r} needs an entity id after the kind, e.g. "
            f"'{tokens[0]}.<id>'; build it with events.subject()"
        )
    for token in tokens[1:]:
        if not token or _TOKEN_BAD.search(token):
            raise ConfigError(
                f"subject {rel_subject!r} has an invalid token {token!r} (empty, wildcard or "
                "whitespace); build it with events.subject() to encode ids"
            )
    return rel_subject


def validate_filter(rel_filter: str) -> str:
    """Check a relative subject filter for reads: literal kind, tokens may be ``*`` or ``>``."""
    if not isinstance(rel_filter, str) or not rel_filter:
        raise ConfigError(f"subject filter {rel_filter!r} must be a non-empty string")
    tokens = rel_filter.split(".")
    validate_kind(tokens[0])
    for i, token in enumerate(tokens[1:], start=1):
        if token in ("*", ">"):
            if token == ">" and i != len(tokens) - 1:
                raise ConfigError(f"subject filter {rel_filter!r}: '>' must be the last token")
            continue
        if not token or _TOKEN_BAD.search(token):
            raise ConfigError(f"subject filter {rel_filter!r} has an invalid token {token!r}")
    return rel_filter


def is_literal(rel_subject: str) -> bool:
    """Return whether a subject has no wildcard token."""
    return not any(t in ("*", ">") for t in rel_subject.split("."))


def subject_matches(pattern: str, rel_subject: str) -> bool:
    """Return whether ``rel_subject`` matches the NATS ``pattern`` (``*`` one token, ``>`` rest)."""
    if pattern == rel_subject:
        return True
    p_tokens = pattern.split(".")
    s_tokens = rel_subject.split(".")
    for i, p in enumerate(p_tokens):
        if p == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens):
            return False
        if p != "*" and p != s_tokens[i]:
            return False
    return len(p_tokens) == len(s_tokens)


def stream_name(namespace: str, kind: str) -> str:
    """Return the JetStream stream name of ``kind`` under ``namespace``.

    ``stream_name("converge", "tasks") == "CONVERGE_TASKS"``; kind ``coord`` maps
    to ``..._COORDINATION``; other kinds to ``<NS>_<KIND upper>``.
    """
    validate_namespace(namespace)
    validate_kind(kind)
    suffix = KNOWN_KINDS.get(kind, kind.upper())
    return f"{namespace.upper()}_{suffix}"
