"""JetStream stream specifications and idempotent provisioning.

A :class:`StreamSpec` is the value object for one converge stream: its name,
its subjects (``<ns>.<kind>.>``), replicas, storage, limits and dedupe window.
:func:`ensure_stream` creates the stream or, when it exists with drifted
settings, updates what JetStream allows to change; it raises
:class:`~converge.errors.ConfigError` for what cannot be reconciled (storage
type, or subjects that belong to another namespace). Errors are matched by
JetStream ``err_code``, never by text.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import nats.errors
from nats.js import api
from nats.js.errors import APIError
from nats.js.manager import JetStreamManager
from pydantic import BaseModel, ConfigDict, Field

from converge.errors import ConfigError, ConvergeTimeoutError, EventLogError
from events.subjects import KNOWN_KINDS, stream_name, validate_kind, validate_namespace

__all__ = [
    "ERR_STREAM_NAME_IN_USE",
    "ERR_STREAM_NOT_FOUND",
    "StreamSettings",
    "StreamSpec",
    "ensure_stream",
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


async def ensure_stream(jsm: JetStreamManager, spec: StreamSpec) -> api.StreamInfo:
    """Create ``spec``'s stream, or reconcile an existing one; return its info.

    Raises :class:`ConfigError` for drift JetStream cannot apply (storage type,
    foreign subjects) and :class:`EventLogError` for broker failures.
    """
    try:
        return await _ensure(jsm, spec)
    except nats.errors.TimeoutError as exc:
        raise ConvergeTimeoutError(
            f"JetStream did not answer while provisioning stream {spec.name}; is the server "
            "(or the cluster's meta leader) ready?"
        ) from exc
    except nats.errors.NoRespondersError as exc:
        raise EventLogError(
            f"cannot provision stream {spec.name}: JetStream is not enabled on the server "
            "(start it with -js)"
        ) from exc


async def _ensure(jsm: JetStreamManager, spec: StreamSpec) -> api.StreamInfo:
    try:
        info = await jsm.stream_info(spec.name)
    except APIError as exc:
        if exc.err_code != ERR_STREAM_NOT_FOUND:
            raise _broker_error(spec, "look up", exc) from exc
        try:
            info = await jsm.add_stream(spec.to_config())
            logger.info("created stream %s (%s)", spec.name, ", ".join(spec.subjects))
            return info
        except APIError as add_exc:
            if add_exc.err_code != ERR_STREAM_NAME_IN_USE:
                raise _broker_error(spec, "create", add_exc) from add_exc
            # Another process created it first: reconcile with theirs below.
            try:
                info = await jsm.stream_info(spec.name)
            except APIError as again:
                raise _broker_error(spec, "look up", again) from again
    return await _reconcile(jsm, spec, info)


async def _reconcile(
    jsm: JetStreamManager, spec: StreamSpec, info: api.StreamInfo
) -> api.StreamInfo:
    drift = spec.drift(info.config)
    if not drift:
        return info
    if "subjects" in drift:
        raise ConfigError(
            f"stream {spec.name} exists with subjects {list(drift['subjects'][0])}, not "
            f"{list(spec.subjects)}; it belongs to another namespace or tool: choose another "
            "namespace or remove the stream"
        )
    if "storage" in drift:
        have, want = drift["storage"]
        raise ConfigError(
            f"stream {spec.name} uses {have} storage, but {want} is configured; JetStream "
            f"cannot change a stream's storage: configure storage={have!r} or recreate the stream"
        )
    logger.warning(
        "stream %s drifted from its configuration, updating: %s",
        spec.name,
        ", ".join(f"{k} {a!r} -> {w!r}" for k, (a, w) in sorted(drift.items())),
        extra={"stream": spec.name},
    )
    try:
        return await jsm.update_stream(spec.to_config())
    except APIError as exc:
        raise ConfigError(
            f"stream {spec.name} could not be updated to its configuration "
            f"({', '.join(sorted(drift))}): {exc.description} (err_code {exc.err_code})"
        ) from exc


def _broker_error(spec: StreamSpec, action: str, exc: APIError) -> EventLogError:
    return EventLogError(
        f"cannot {action} stream {spec.name}: {exc.description} (err_code {exc.err_code}, "
        f"code {exc.code}); check the JetStream account limits and permissions"
    )
