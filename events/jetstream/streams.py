"""JetStream stream specifications and idempotent provisioning.

A :class:`StreamSpec` is the value object for one converge stream: its name,
its subjects (``<ns>.<kind>.>``), replicas, storage, limits and dedupe window.

Clients never change an existing stream's settings: :func:`ensure_stream`
creates a missing stream (or, with ``create=False``, raises
:class:`~converge.errors.NotFoundError` naming it) and uses an existing one as it
is, logging one warning when its settings differ from the spec (on a three-replica
cluster a client configured for one replica must not shrink the streams).
:func:`update_stream` is the explicit operation (``converge streams update``) that
applies the spec; it raises :class:`~converge.errors.ConfigError` for what JetStream
cannot change (the storage type). A stream whose subjects belong to another
namespace is always a :class:`~converge.errors.ConfigError`. Errors are matched by
JetStream ``err_code``, never by text.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Literal

import nats.errors
from nats.js import api
from nats.js.errors import APIError
from nats.js.manager import JetStreamManager
from pydantic import BaseModel, ConfigDict, Field

from converge.errors import ConfigError, ConvergeTimeoutError, EventLogError, NotFoundError
from events.jetstream.retry import JetStreamUnavailable
from events.subjects import KNOWN_KINDS, stream_name, validate_kind, validate_namespace

__all__ = [
    "ERR_STREAM_NAME_IN_USE",
    "ERR_STREAM_NOT_FOUND",
    "StreamSettings",
    "StreamSpec",
    "ensure_stream",
    "update_stream",
]

logger = logging.getLogger(__name__)

ERR_STREAM_NOT_FOUND = 10059
ERR_STREAM_NAME_IN_USE = 10058


class StreamSettings(BaseModel):
    """Settings shared by every stream of a namespace (limits: ``-1``/``0`` unlimited)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replicas: int = Field(default=1, ge=1, le=5)
    storage: Literal["file", "memory"] = "file"
    max_age_sec: float = Field(default=0.0, ge=0)
    max_bytes: int = Field(default=-1, ge=-1)
    max_msgs: int = Field(default=-1, ge=-1)
    max_msgs_per_subject: int = Field(default=-1, ge=-1)
    max_msg_size: int = Field(default=-1, ge=-1)
    duplicate_window_sec: float = Field(default=120.0, gt=0)

    def spec(self, namespace: str, kind: str) -> StreamSpec:
        """Return the spec of ``kind``'s stream under ``namespace``."""
        validate_namespace(namespace)
        validate_kind(kind)
        return StreamSpec(
            name=stream_name(namespace, kind),
            subjects=(f"{namespace}.{kind}.>",),
            description=f"converge {namespace} {KNOWN_KINDS.get(kind, kind).lower()} events",
            **self.model_dump(),
        )


class StreamSpec(StreamSettings):
    """The declared configuration of one stream."""

    name: str
    subjects: tuple[str, ...]
    description: str | None = None

    def to_config(self) -> api.StreamConfig:
        """Return the nats-py stream config (a new object per call)."""
        return api.StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            storage=api.StorageType(self.storage),
            num_replicas=self.replicas,
            max_age=self.max_age_sec,
            max_bytes=self.max_bytes,
            max_msgs=self.max_msgs,
            max_msgs_per_subject=self.max_msgs_per_subject,
            max_msg_size=self.max_msg_size,
            duplicate_window=self.duplicate_window_sec,
            allow_direct=True,
        )

    def drift(self, config: api.StreamConfig) -> dict[str, tuple[Any, Any]]:
        """Return ``{field: (actual, wanted)}`` for every setting that differs."""
        actual: dict[str, Any] = {
            "subjects": tuple(config.subjects or ()),
            "storage": _enum_value(config.storage),
            "replicas": config.num_replicas or 1,
            "max_age_sec": float(config.max_age or 0),
            "max_bytes": _limit(config.max_bytes),
            "max_msgs": _limit(config.max_msgs),
            "max_msgs_per_subject": _limit(config.max_msgs_per_subject),
            "max_msg_size": _limit(config.max_msg_size),
            "duplicate_window_sec": float(config.duplicate_window or 0),
            "allow_direct": bool(config.allow_direct),
        }
        wanted: dict[str, Any] = {
            "subjects": self.subjects,
            "storage": self.storage,
            "replicas": self.replicas,
            "max_age_sec": float(self.max_age_sec),
            "max_bytes": self.max_bytes,
            "max_msgs": self.max_msgs,
            "max_msgs_per_subject": self.max_msgs_per_subject,
            "max_msg_size": self.max_msg_size,
            "duplicate_window_sec": float(self.duplicate_window_sec),
            "allow_direct": True,
        }
        out: dict[str, tuple[Any, Any]] = {}
        for key, want in wanted.items():
            have = actual[key]
            if isinstance(want, float):
                if abs(have - want) > 1e-6:
                    out[key] = (have, want)
            elif have != want:
                out[key] = (have, want)
        return out


def _limit(value: int | None) -> int:
    return -1 if value is None or value <= 0 else int(value)


def _enum_value(value: object) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


async def ensure_stream(
    jsm: JetStreamManager, spec: StreamSpec, *, create: bool = True, warn: bool = True
) -> api.StreamInfo:
    """Return ``spec``'s stream as it is, creating it when missing; never change it.

    With ``create=False`` a missing stream raises :class:`NotFoundError` naming it.
    With ``warn`` (default) settings that differ from ``spec`` are logged once per
    call. Raises :class:`ConfigError` when the stream's subjects are not the spec's
    (another namespace or tool) and :class:`EventLogError` for broker failures.
    """
    with _mapped(spec, "provisioning"):
        info = await _lookup(jsm, spec)
        if info is None:
            if not create:
                raise NotFoundError(
                    f"stream {spec.name} ({', '.join(spec.subjects)}) does not exist; check "
                    "the namespace, or let a writer (or `converge streams update`) create it"
                )
            info = await _create(jsm, spec)
            if info is not None:
                return info
            info = await _lookup(jsm, spec)  # another process created it first: use theirs
            if info is None:
                raise EventLogError(f"stream {spec.name} was created and deleted meanwhile")
    drift = _check_subjects(spec, info)
    if drift and warn:
        logger.warning(
            "stream %s differs from this client's configuration (%s); using it as it is "
            "(clients never change a stream: run `converge streams update` to apply it)",
            spec.name,
            _shown(drift),
            extra={"stream": spec.name},
        )
    return info


async def update_stream(jsm: JetStreamManager, spec: StreamSpec) -> dict[str, tuple[Any, Any]]:
    """Create ``spec``'s stream or apply ``spec`` to it; return ``{field: (old, new)}``.

    Raises :class:`ConfigError` for what JetStream cannot change (storage type,
    subjects of another namespace) or refuses.
    """
    with _mapped(spec, "updating"):
        info = await _lookup(jsm, spec)
        if info is None and await _create(jsm, spec) is not None:
            return {}
        if info is None:
            info = await _lookup(jsm, spec)
        if info is None:
            raise EventLogError(f"stream {spec.name} was created and deleted meanwhile")
        drift = _check_subjects(spec, info)
        if not drift:
            return {}
        if "storage" in drift:
            have, want = drift["storage"]
            raise ConfigError(
                f"stream {spec.name} uses {have} storage, but {want} is configured; JetStream "
                f"cannot change a stream's storage: configure storage={have!r} or recreate "
                "the stream"
            )
        try:
            await jsm.update_stream(spec.to_config())
        except APIError as exc:
            raise ConfigError(
                f"stream {spec.name} could not be updated to its configuration "
                f"({', '.join(sorted(drift))}): {exc.description} (err_code {exc.err_code})"
            ) from exc
    logger.warning("updated stream %s: %s", spec.name, _shown(drift), extra={"stream": spec.name})
    return drift


@contextlib.contextmanager
def _mapped(spec: StreamSpec, action: str) -> Iterator[None]:
    """Map nats-py's timeouts and missing JetStream to converge errors."""
    try:
        yield
    except nats.errors.TimeoutError as exc:
        raise ConvergeTimeoutError(
            f"JetStream did not answer while {action} stream {spec.name}; is the server (or "
            "the cluster's meta leader) ready?"
        ) from exc
    except nats.errors.NoRespondersError as exc:
        raise EventLogError(
            f"cannot reach stream {spec.name}: JetStream is not enabled on the server (start "
            "it with -js)"
        ) from exc


async def _lookup(jsm: JetStreamManager, spec: StreamSpec) -> api.StreamInfo | None:
    try:
        return await jsm.stream_info(spec.name)
    except APIError as exc:
        if exc.err_code == ERR_STREAM_NOT_FOUND:
            return None
        raise _broker_error(spec, "look up", exc) from exc


async def _create(jsm: JetStreamManager, spec: StreamSpec) -> api.StreamInfo | None:
    """Create the stream; ``None`` when another process created it first."""
    try:
        info = await jsm.add_stream(spec.to_config())
    except APIError as exc:
        if exc.err_code == ERR_STREAM_NAME_IN_USE:
            return None
        raise _broker_error(spec, "create", exc) from exc
    logger.info("created stream %s (%s)", spec.name, ", ".join(spec.subjects))
    return info


def _check_subjects(spec: StreamSpec, info: api.StreamInfo) -> dict[str, tuple[Any, Any]]:
    """Return the drift of ``info`` from ``spec``; raise when the subjects differ."""
    drift = spec.drift(info.config)
    if "subjects" in drift:
        raise ConfigError(
            f"stream {spec.name} exists with subjects {list(drift['subjects'][0])}, not "
            f"{list(spec.subjects)}; it belongs to another namespace or tool: choose another "
            "namespace or remove the stream"
        )
    return drift


def _shown(drift: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {a!r} -> {w!r}" for k, (a, w) in sorted(drift.items()))


def _broker_error(spec: StreamSpec, action: str, exc: APIError) -> EventLogError:
    # 503: JetStream temporarily unavailable (an election); retry.ride_out retries it
    cls = JetStreamUnavailable if exc.code == 503 else EventLogError
    return cls(
        f"cannot {action} stream {spec.name}: {exc.description} (err_code {exc.err_code}, "
        f"code {exc.code}); check the JetStream account limits and permissions"
    )
