// Policy `policy_rbac` in JavaScript: the twin of guest-steps/policy-rbac
// (Rust), built with componentize-qjs (QuickJS, ~1.6 MB) rather than
// componentize-js: a policy needs no fetch().
//
// Allows `action` on `resource` when one of the user's roles
// (`permissions.roles`) does, per a fixed role table. Writes carry the
// obligation ["audit", "write"].
//
// Input: { "permissions": { "roles": [...] }, "resource": "...", "action": "..." }.

import { log } from 'braid:workflow/telemetry@0.1.1';

// [role, resource pattern, actions]
const ROLES = [
  ['admin', '*', ['*']],
  ['engineer', 'projects/*', ['read', 'write']],
  ['reports-reader', 'reports/*', ['read']],
  ['read-only', '*', ['read']],
  ['guest', 'public/*', ['read']],
];

// Whether `pattern` (`*`, an exact name, or `prefix/*`) covers `resource`.
function resourceMatches(pattern, resource) {
  if (pattern === '*' || pattern === resource) return true;
  if (!pattern.endsWith('/*')) return false;
  const prefix = pattern.slice(0, -2);
  return resource.startsWith(prefix) && resource.slice(prefix.length).startsWith('/');
}

export const policy = {
  evaluate(ctx, inputText) {
    let input;
    try {
      input = JSON.parse(inputText);
    } catch (e) {
      throw `input is not JSON: ${e.message}`;
    }
    if (input === null || typeof input !== 'object' || Array.isArray(input)) {
      throw 'input must be a JSON object';
    }
    const text = (v) => (typeof v === 'string' ? v : '');
    const resource = text(input.resource);
    const action = text(input.action);
    if (!resource || !action) {
      throw 'input needs `resource` and `action`';
    }
    const rawRoles = input.permissions?.roles;
    const roles = Array.isArray(rawRoles) ? rawRoles.filter((r) => typeof r === 'string') : [];
    const granting = roles.find((role) =>
      ROLES.some(
        ([name, pattern, actions]) =>
          name === role &&
          resourceMatches(pattern, resource) &&
          actions.some((a) => a === '*' || a === action),
      ),
    );
    if (granting === undefined) {
      return {
        allow: false,
        reasons: [`none of the roles ${JSON.stringify(roles)} may \`${action}\` \`${resource}\``],
        obligations: [],
      };
    }
    log(ctx, 'debug', `role ${granting} allows ${action} ${resource}`);
    return {
      allow: true,
      reasons: [`role \`${granting}\` may \`${action}\` \`${resource}\``],
      obligations: action === 'write' ? [['audit', 'write']] : [],
    };
  },
};
