"""Policy `__NAME__`: allows `read`, denies everything else.

Input: a JSON object of facts, here {"action": "...", "resource": "..."}.
Raising Err(message) means the policy could not decide (malformed input);
the host treats it as a deny.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.policy import Decision
from wit_world.imports import telemetry
from wit_world.imports.types import TraceContext


class Policy(exports.Policy):
    def evaluate(self, ctx: TraceContext, input: str) -> Decision:
        try:
            facts = json.loads(input)
        except ValueError as e:
            raise Err(f"input is not JSON: {e}")
        if not isinstance(facts, dict) or not isinstance(facts.get("action"), str):
            raise Err("input needs `action`")
        action, resource = facts["action"], facts.get("resource", "")
        allow = action == "read"
        telemetry.log(ctx, telemetry.Level.DEBUG, f"{action} {resource}: allow={allow}")
        reason = (
            f"`read` is allowed on `{resource}`"
            if allow
            else f"only `read` is allowed, not `{action}`"
        )
        return Decision(allow=allow, reasons=[reason], obligations=[])
