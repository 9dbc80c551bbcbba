"""Governance models: how a pool settles a dispute from its members' votes.

``resolve_dispute(context)`` is a pure function of ``context``, a dict. Votes come
as ``context["votes"]``: either a mapping voter id -> choice or a plain list of
choices (anonymous ballots). Choices may be any JSON-able value. A model returns
the chosen outcome, or ``None`` (or the context's ``"fallback"``/``"tie_breaker"``
where documented) when there is no decision.

Pools record their model by registered name and parameters (:meth:`GovernanceModel.to_spec`);
:func:`governance_from_spec` rebuilds it. Built-in names: ``"democratic"``,
``"dictatorial"``, ``"bicameral"``, ``"veto"``, ``"empirical"``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

from converge.errors import ConfigError, DecodeError
from converge.policy._spec import PolicyRegistry, RecordedPolicy
from converge.policy._votes import (
    Ballot,
    agent_ids,
    as_context,
    ballots_of,
    choice_key,
    majority,
    tally,
    top_choice,
    weight_of,
)
from converge.policy.consensus import Consensus

__all__ = [
    "BicameralGovernance",
    "Consensus",
    "DemocraticGovernance",
    "DictatorialGovernance",
    "EmpiricalGovernance",
    "GovernanceModel",
    "VetoGovernance",
    "governance_from_spec",
    "register_governance",
    "registered_governance_models",
]


class GovernanceModel(RecordedPolicy, ABC):
    """Settle a dispute among a pool's members.

    Subclass it, implement :meth:`resolve_dispute` and :meth:`params`, and register
    the class with :func:`register_governance` so pools can record it.
    """

    _kind = "governance model"
    _register_hint = "register_governance"

    @classmethod
    def _policy_registry(cls) -> PolicyRegistry[Any]:
        return _registry

    @abstractmethod
    def resolve_dispute(self, context: Mapping[str, Any] | None) -> Any:
        """Return the outcome for ``context``, or ``None`` when there is no decision.

        Raises ``DecodeError`` when ``context`` is malformed (not a dict, votes of
        the wrong shape, bad weights).
        """
        return None


class DemocraticGovernance(GovernanceModel):
    """Majority rule: the choice with more than ``threshold`` of the votes cast wins.

    ``threshold`` defaults to 0.5 (a strict majority); 2/3 asks for a qualified
    majority. No such choice, or no votes: ``None``. Raises ``ConfigError`` for a
    threshold outside [0.5, 1).
    """

    def __init__(self, threshold: float = 0.5) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ConfigError(f"DemocraticGovernance.threshold must be a number, got {threshold!r}")
        if not 0.5 <= threshold < 1.0:
            raise ConfigError(
                f"DemocraticGovernance.threshold must be in [0.5, 1), got {threshold!r}"
            )
        self.threshold = float(threshold)

    def resolve_dispute(self, context: Mapping[str, Any] | None) -> Any:
        ctx = as_context(context)
        return majority(ballots_of(ctx.get("votes")), self.threshold)

    def params(self) -> dict[str, Any]:
        return {} if self.threshold == 0.5 else {"threshold": self.threshold}


class DictatorialGovernance(GovernanceModel):
    """The leader decides: the leader's vote in ``context["votes"]`` (a mapping) wins.

    When the leader has not voted the result is ``"Decided by <leader_id>"`` (the
    seed behaviour), so callers can tell who holds the decision. Raises
    ``ConfigError`` for an empty leader id.
    """

    def __init__(self, leader_id: str) -> None:
        if not isinstance(leader_id, str) or not leader_id:
            raise ConfigError(
                f"DictatorialGovernance.leader_id must be an agent id, got {leader_id!r}"
            )
        self.leader_id = leader_id

    def resolve_dispute(self, context: Mapping[str, Any] | None) -> Any:
        ctx = as_context(context)
        for voter, choice in ballots_of(ctx.get("votes")):
            if voter == self.leader_id:
                return choice
        return f"Decided by {self.leader_id}"

    def params(self) -> dict[str, Any]:
        return {"leader_id": self.leader_id}


class BicameralGovernance(GovernanceModel):
    """Two chambers must agree: each decides by majority, the outcome needs both.

    Votes per chamber come from ``context["chamber_a_votes"]`` and
    ``context["chamber_b_votes"]``; or, when ``chamber_a``/``chamber_b`` (member
    ids) are configured, ``context["votes"]`` (voter -> choice) is split by
    membership. When the chambers disagree or either has no majority the result
    is ``context.get("tie_breaker")`` (``None`` by default).
    """

    def __init__(
        self,
        chamber_a: Iterable[str] | None = None,
        chamber_b: Iterable[str] | None = None,
    ) -> None:
        if (chamber_a is None) != (chamber_b is None):
            raise ConfigError("BicameralGovernance needs both chamber_a and chamber_b, or neither")
        self.chamber_a = None if chamber_a is None else agent_ids(chamber_a, "chamber_a")
        self.chamber_b = None if chamber_b is None else agent_ids(chamber_b, "chamber_b")

    def _chambers(self, ctx: Mapping[str, Any]) -> tuple[list[Ballot], list[Ballot]]:
        if "chamber_a_votes" in ctx or "chamber_b_votes" in ctx or self.chamber_a is None:
            return (
                ballots_of(ctx.get("chamber_a_votes"), "chamber_a_votes"),
                ballots_of(ctx.get("chamber_b_votes"), "chamber_b_votes"),
            )
        assert self.chamber_b is not None
        ballots = ballots_of(ctx.get("votes"))
        return (
            [ballot for ballot in ballots if ballot[0] in self.chamber_a],
            [ballot for ballot in ballots if ballot[0] in self.chamber_b],
        )

    def resolve_dispute(self, context: Mapping[str, Any] | None) -> Any:
        ctx = as_context(context)
        votes_a, votes_b = self._chambers(ctx)
        outcome_a = majority(votes_a)
        outcome_b = majority(votes_b)
        if (
            outcome_a is not None
            and outcome_b is not None
            and choice_key(outcome_a) == choice_key(outcome_b)
        ):
            return outcome_a
        return ctx.get("tie_breaker")

    def params(self) -> dict[str, Any]:
        if self.chamber_a is None or self.chamber_b is None:
            return {}
        return {"chamber_a": sorted(self.chamber_a), "chamber_b": sorted(self.chamber_b)}


VETO_CHOICES = frozenset({"veto", "against", "no"})
"""Choices that, cast by a veto holder, block the decision."""


class VetoGovernance(GovernanceModel):
    """Majority rule that any veto holder can block.

    The outcome is the majority of ``context["votes"]``. It is blocked when
    ``context["veto_exercised"]`` is true, when a veto holder appears in
    ``context["vetoes"]`` (a list of agent ids), or when a veto holder voted
    ``"veto"``/``"against"``/``"no"`` or for another choice than the majority.
    A blocked decision returns ``context.get("fallback")`` (``None`` by default).
    ``veto_agent_id`` is the older one-holder form of ``veto_holders``.
    """

    def __init__(
        self,
        veto_holders: str | Iterable[str] | None = None,
        *,
        veto_agent_id: str | None = None,
    ) -> None:
        holders: set[str] = set()
        if isinstance(veto_holders, str):
            holders |= agent_ids([veto_holders], "veto_holders")
        elif veto_holders is not None:
            holders |= agent_ids(veto_holders, "veto_holders")
        if veto_agent_id is not None:
            holders |= agent_ids([veto_agent_id], "veto_agent_id")
        self.veto_holders = frozenset(holders)

    @property
    def veto_agent_id(self) -> str | None:
        """The single veto holder, when there is exactly one (the older attribute)."""
        return next(iter(self.veto_holders)) if len(self.veto_holders) == 1 else None

    def is_vetoed(self, context: Mapping[str, Any] | None) -> bool:
        """Return whether ``context`` holds a veto."""
        ctx = as_context(context)
        if ctx.get("veto_exercised"):
            return True
        vetoes = ctx.get("vetoes")
        if vetoes is not None:
            if isinstance(vetoes, str) or not isinstance(vetoes, Iterable):
                raise DecodeError(f"governance vetoes must be a list of agent ids, got {vetoes!r}")
            if any(v in self.veto_holders for v in vetoes):
                return True
        ballots = ballots_of(ctx.get("votes"))
        outcome = majority(ballots)
        for voter, choice in ballots:
            if voter is None or voter not in self.veto_holders:
                continue
            if isinstance(choice, str) and choice.lower() in VETO_CHOICES:
                return True
            if outcome is not None and choice_key(choice) != choice_key(outcome):
                return True
        return False

    def resolve_dispute(self, context: Mapping[str, Any] | None) -> Any:
        ctx = as_context(context)
        if self.is_vetoed(ctx):
            return ctx.get("fallback")
        return majority(ballots_of(ctx.get("votes")))

    def params(self) -> dict[str, Any]:
        return {"veto_holders": sorted(self.veto_holders)}


class EmpiricalGovernance(GovernanceModel):
    """Evidence-weighted vote: the choice with the highest total weight wins.

    Weights come from ``context["weights"]`` or ``context["performance"]``: a
    mapping voter -> weight (voters missing from it weigh ``default_weight``), or,
    for a list of votes, a list of the same length. Without weights (or with a
    list of another length) it is a plain majority vote. A tie for first place,
    or a zero total, gives ``None``. Raises ``DecodeError`` for negative or
    non-numeric weights and ``ConfigError`` for a bad ``default_weight``.
    """

    def __init__(self, default_weight: float = 1.0) -> None:
        try:
            self.default_weight = weight_of(default_weight, "default_weight")
        except DecodeError as exc:
            raise ConfigError(f"EmpiricalGovernance: {exc}") from exc

    def resolve_dispute(self, context: Mapping[str, Any] | None) -> Any:
        ctx = as_context(context)
        ballots = ballots_of(ctx.get("votes"))
        if not ballots:
            return None
        weights = ctx.get("weights")
        if weights is None:
            weights = ctx.get("performance")
        if weights is None:
            return majority(ballots)
        if isinstance(weights, Mapping):
            weighted = [
                (
                    choice,
                    weight_of(weights[voter], f"weight of {voter!r}")
                    if voter is not None and voter in weights
                    else self.default_weight,
                )
                for voter, choice in ballots
            ]
        elif isinstance(weights, list | tuple):
            if len(weights) != len(ballots):
                return majority(ballots)
            weighted = [
                (choice, weight_of(w, f"weights[{i}]"))
                for i, ((_, choice), w) in enumerate(zip(ballots, weights, strict=True))
            ]
        else:
            raise DecodeError(
                f"governance weights must be a mapping voter -> weight or a list, "
                f"got {type(weights).__name__}"
            )
        return top_choice(tally(weighted))

    def params(self) -> dict[str, Any]:
        return {} if self.default_weight == 1.0 else {"default_weight": self.default_weight}


_registry: PolicyRegistry[GovernanceModel] = PolicyRegistry(
    "governance model",
    GovernanceModel,  # type: ignore[type-abstract]
)
_registry.register("democratic", DemocraticGovernance)
_registry.register("dictatorial", DictatorialGovernance)
_registry.register("bicameral", BicameralGovernance)
_registry.register("veto", VetoGovernance)
_registry.register("empirical", EmpiricalGovernance)


def register_governance(name: str, cls: type[GovernanceModel]) -> None:
    """Register ``cls`` under ``name`` so pools can record and rebuild it.

    The class must accept its :meth:`GovernanceModel.params` as keyword arguments.
    Raises ``ConfigError`` for a name taken by another class.
    """
    _registry.register(name, cls)


def registered_governance_models() -> list[str]:
    """Return the registered governance model names, sorted."""
    return _registry.names()


def governance_from_spec(
    spec: Mapping[str, Any] | str | GovernanceModel | None,
) -> GovernanceModel:
    """Return the governance model a spec describes.

    ``None`` gives :class:`DemocraticGovernance` (the default); a model object is returned as is; a
    name or ``{"name": ..., "params": {...}}`` is built from the registry. Raises
    ``ConfigError`` for an unknown name or parameters the model rejects.
    """
    if spec is None:
        return DemocraticGovernance()
    if isinstance(spec, GovernanceModel):
        return spec
    return _registry.build(spec)
