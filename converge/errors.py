"""The one exception tree of converge.

This is a leaf module: it imports nothing from the rest of the project, so the
``events`` package may use it too. Every error converge raises derives from
:class:`ConvergeError`; where a builtin fits, the error also subclasses it so
ordinary ``except`` clauses keep working.

::

    ConvergeError
    ├── DecodeError (ValueError)            bad bytes, bad dict, bad event, bad frame
    ├── VerificationError                   bad or missing signature, verify-only identity
    ├── NotAuthorizedError (PermissionError, ValueError)
    ├── ConfigError (ValueError)            bad configuration, missing binary
    ├── NotStartedError (RuntimeError)      service used before start() or after stop()
    ├── ClosedError (NotStartedError)       service or connection closed for good
    ├── ConcurrencyError                    optimistic concurrency check lost
    ├── NotFoundError (KeyError)            unknown task, pool, agent, event
    ├── InvalidStateError                   command not allowed in the entity's state
    ├── PolicyError                         admission, safety or governance refusal
    ├── TransportError (ConnectionError)    transport failed to send or receive
    │   └── FrameTooLargeError              frame above the configured limit
    ├── EventLogError                       the event log failed (broker, stream, I/O)
    │   └── StreamMismatchError             stream shorter than a snapshot's position
    └── ConvergeTimeoutError (TimeoutError) a bounded wait ran out
"""

from __future__ import annotations

__all__ = [
    "ClosedError",
    "ConcurrencyError",
    "ConfigError",
    "ConvergeError",
    "ConvergeTimeoutError",
    "DecodeError",
    "EventLogError",
    "FrameTooLargeError",
    "InvalidStateError",
    "NotAuthorizedError",
    "NotFoundError",
    "NotStartedError",
    "PolicyError",
    "StorageFullError",
    "StreamMismatchError",
    "TransportError",
    "VerificationError",
]


class ConvergeError(Exception):
    """Root of every error converge raises."""


class DecodeError(ConvergeError, ValueError):
    """Bytes, a dict or an event could not be decoded into a valid value."""


class VerificationError(ConvergeError):
    """A signature is missing or invalid, or a verify-only identity was asked to sign."""


class NotAuthorizedError(ConvergeError, PermissionError, ValueError):
    """The actor may not do this (for example: report a task it does not hold).

    Also a ``ValueError``, the error the seed design raised for these refusals.
    """


class ConfigError(ConvergeError, ValueError):
    """Configuration is invalid or incomplete; the message names the key and the fix."""


class NotStartedError(ConvergeError, RuntimeError):
    """A service was used before ``start()`` or after ``stop()``."""


class ClosedError(NotStartedError):
    """A service or its connection is closed for good; make a new one."""


class ConcurrencyError(ConvergeError):
    """An append lost an optimistic concurrency race on a subject.

    ``subject`` names the entity's subject, ``expected`` the version the writer
    assumed and ``actual`` the last sequence the log had (``None`` when unknown).
    """

    def __init__(
        self,
        message: str,
        *,
        subject: str | None = None,
        expected: int | None = None,
        actual: int | None = None,
    ) -> None:
        super().__init__(message)
        self.subject = subject
        self.expected = expected
        self.actual = actual


class NotFoundError(ConvergeError, KeyError):
    """An id names no known task, pool, agent or event."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the sentence readable
        return str(self.args[0]) if self.args else ""


class InvalidStateError(ConvergeError):
    """The command is not allowed in the entity's current state."""


class PolicyError(ConvergeError):
    """An admission, safety or governance policy refused the action."""


class TransportError(ConvergeError, ConnectionError):
    """A transport failed to send or receive."""


class FrameTooLargeError(TransportError):
    """A frame or message is larger than the configured maximum."""


class EventLogError(ConvergeError):
    """The event log failed: broker unreachable, stream missing, storage error."""


class StorageFullError(EventLogError):
    """The broker refused an append for lack of storage (disk full, or ``max_file_store``)."""


class StreamMismatchError(EventLogError):
    """A stream does not match a snapshot (for example it is shorter than its position)."""


class ConvergeTimeoutError(ConvergeError, TimeoutError):
    """A bounded wait ran out."""
