// Step `aggregate` in JavaScript: the twin of guest-steps/aggregate (Rust).
// It compiles the workflow's final result from the other steps' outputs.
//
// Input: { "auth", "profile", "permissions", "decision", "claim" } (each a
// step's output; `decision` is the access policy's) and `resource`, `action`.
// Output: the trace id, the claim, a profile summary, the access decision and
// the API timings each step measured. A field that is absent comes out null.
//
// Built by `make guests` with componentize-js against the world
// braid:workflow/step-component (see docs/writing-steps.md).

import { event } from 'braid:workflow/telemetry@0.1.1';

const fatal = (message) => ({ tag: 'fatal', val: message });

// `obj.name`, or null when `obj` is not an object or has no such field.
function get(obj, name) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return null;
  return Object.hasOwn(obj, name) ? obj[name] : null;
}

export const step = {
  run(ctx, inputText) {
    let input;
    try {
      input = JSON.parse(inputText);
    } catch (e) {
      throw fatal(`input is not JSON: ${e.message}`);
    }
    const profile = get(input, 'profile');
    const decision = get(input, 'decision');
    const claim = get(input, 'claim');
    const timing = (name) => get(get(input, name), 'api_ms');
    const result = {
      trace_id: ctx.traceId,
      user: {
        id: get(profile, 'id'),
        name: get(profile, 'name'),
        email: get(profile, 'email'),
        department: get(profile, 'department'),
      },
      roles: get(get(input, 'permissions'), 'roles'),
      decision: {
        allowed: get(decision, 'allowed'),
        resource: get(input, 'resource'),
        action: get(input, 'action'),
        reasons: get(decision, 'reasons'),
        obligations: get(decision, 'obligations'),
      },
      claim: {
        claim_id: get(claim, 'claim_id'),
        work_item: get(claim, 'work_item'),
        trace_id: get(claim, 'trace_id'),
        expires_at_ms: get(claim, 'expires_at_ms'),
      },
      api_ms: {
        authenticate: timing('auth'),
        fetch_profile: timing('profile'),
        fetch_permissions: timing('permissions'),
      },
    };
    event(ctx, 'workflow.aggregated', [], []);
    return JSON.stringify(result);
  },
};
