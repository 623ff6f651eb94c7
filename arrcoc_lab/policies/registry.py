"""The allocation registry: every policy selectable by name in the CLI, the demo, the widgets, the
notebooks and the benchmark. Built explicitly here from the planners and the literature reducers;
importing a module never adds to it. A research policy joins with `register_policy`."""
from __future__ import annotations

from ..errors import InputError
from ..modeling.allocator import Policy
from .planners import ArrcocPolicy, FullPolicy, HeuristicPolicy, LearnedTierPolicy, RandomPolicy, UniformPolicy
from .reducers import REDUCERS

PLANNERS = (FullPolicy, UniformPolicy, RandomPolicy, HeuristicPolicy, LearnedTierPolicy, ArrcocPolicy)
POLICIES: dict[str, Policy] = {cls.name: cls() for cls in (*PLANNERS, *REDUCERS)}


def register_policy(policy: Policy) -> None:
    """Add (or replace) a policy under its name."""
    if not policy.name:
        raise InputError(f"a policy needs a name to be registered; got {type(policy).__name__} with name ''")
    POLICIES[policy.name] = policy


def get_policy(name: str) -> Policy:
    """The registered policy of that name; an unknown name fails listing the known ones."""
    if not isinstance(name, str) or name not in POLICIES:
        raise InputError(f"unknown policy {name!r}; known: {sorted(POLICIES)}")
    return POLICIES[name]
