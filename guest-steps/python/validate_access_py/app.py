"""Policy `validate_access` in Python: the twin of guest-steps/validate-access
(Rust). Same rules, same reasons, same obligations, so a workflow may run
either one and get the same decision.

Input: {"profile": {...}, "permissions": {...}, "resource": "reports/q3", "action": "read"}

Rules, all of which must hold:
1. the profile is `active`;
2. a grant matches: its `resource` is the resource, `*`, or a `prefix/*`
   covering it, and its `actions` contain the action or `*`;
3. `delete` needs the `admin` role on top of a grant.

Obligations: contractors get ("mask", "email"); degraded permissions (a
compensated fetch) get ("audit", "degraded-permissions").

Built by `make guests` with componentize-py against the world
braid:workflow/policy-component (see docs/writing-steps.md).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.policy import Decision
from wit_world.imports import telemetry
from wit_world.imports.types import TraceContext


def resource_matches(pattern: str, resource: str) -> bool:
    """Whether `pattern` (`*`, an exact name, or `prefix/*`) covers `resource`."""
    if pattern == "*" or pattern == resource:
        return True
    if pattern.endswith("/*"):
        prefix = pattern[:-2]
        return resource.startswith(prefix) and resource[len(prefix):].startswith("/")
    return False


def text(obj, *path) -> str:
    """The string at `path` inside `obj`, or "" when absent or not a string."""
    for key in path:
        if not isinstance(obj, dict):
            return ""
        obj = obj.get(key)
    return obj if isinstance(obj, str) else ""


def deny(reason: str) -> Decision:
    return Decision(allow=False, reasons=[reason], obligations=[])


class Policy(exports.Policy):
    def evaluate(self, ctx: TraceContext, input: str) -> Decision:
        try:
            facts = json.loads(input)
        except ValueError as e:
            raise Err(f"input is not JSON: {e}")
        if not isinstance(facts, dict):
            raise Err("input must be a JSON object")
        resource, action = text(facts, "resource"), text(facts, "action")
        if not resource or not action:
            raise Err("input needs `resource` and `action`")
        user = text(facts, "profile", "id") or "unknown"
        profile = facts.get("profile")
        profile = profile if isinstance(profile, dict) else {}
        if profile.get("active") is not True:
            return deny(f"user `{user}` is not active")

        permissions = facts.get("permissions")
        permissions = permissions if isinstance(permissions, dict) else {}
        grants = permissions.get("grants")
        grants = grants if isinstance(grants, list) else []
        grant = next(
            (
                g
                for g in grants
                if resource_matches(text(g, "resource"), resource)
                and isinstance(g, dict)
                and isinstance(g.get("actions"), list)
                and any(a == action or a == "*" for a in g["actions"])
            ),
            None,
        )
        if grant is None:
            return deny(f"user `{user}` has no grant to `{action}` `{resource}`")

        roles = permissions.get("roles")
        roles = roles if isinstance(roles, list) else []
        if action == "delete" and "admin" not in roles:
            shown = json.dumps(roles, separators=(",", ":"), ensure_ascii=False)
            return deny(f"`delete` needs the admin role; user `{user}` has roles {shown}")

        obligations = []
        if text(profile, "department") == "contractors":
            obligations.append(("mask", "email"))
        if permissions.get("degraded") is True:
            obligations.append(("audit", "degraded-permissions"))
        telemetry.log(ctx, telemetry.Level.DEBUG, f"allow {action} {resource} for {user}")
        return Decision(
            allow=True,
            reasons=[
                f"grant on `{text(grant, 'resource')}` allows `{action}` for active user `{user}`"
            ],
            obligations=obligations,
        )
