"""Allocation policies: the planners (full … arrcoc) and the literature reducers, in
one explicit registry. Policies never reference the model; token-level reducers that need the LLM
score through the narrow `LLMScoring` hook the model puts in their context."""
from .planners import OraclePolicy
from .registry import PLANNERS, POLICIES, get_policy, register_policy
from .reducers import BASELINES, REDUCERS

__all__ = ["BASELINES", "OraclePolicy", "PLANNERS", "POLICIES", "REDUCERS", "get_policy", "register_policy"]
