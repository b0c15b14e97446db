// Policy `__NAME__`: allows `read`, denies everything else.
//
// Input: a JSON object of facts, here { "action": "...", "resource": "..." }.
// Throwing a string means the policy could not decide (malformed input); the
// host treats it as a deny.

import { log } from 'braid:workflow/telemetry@0.1.1';

export const policy = {
  evaluate(ctx, inputText) {
    let facts;
    try {
      facts = JSON.parse(inputText);
    } catch (e) {
      throw `input is not JSON: ${e.message}`;
    }
    if (typeof facts?.action !== 'string') {
      throw 'input needs `action`';
    }
    const { action, resource = '' } = facts;
    const allow = action === 'read';
    log(ctx, 'debug', `${action} ${resource}: allow=${allow}`);
    return {
      allow,
      reasons: [allow ? `\`read\` is allowed on \`${resource}\`` : `only \`read\` is allowed, not \`${action}\``],
      obligations: [],
    };
  },
};
