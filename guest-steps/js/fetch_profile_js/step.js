// Step `fetch_profile` in JavaScript: the twin of guest-steps/fetch-profile
// (Rust). It reads the user's profile at GET {api_base}/users/{user_id}/profile
// with the bearer token, using the standard `fetch()`; the host's wasi:http
// carries the request and stamps it with the run's `traceparent`.
//
// Input: { "api_base", "user_id", "token" }. Output: the profile JSON plus
// `api_ms`. Errors: a transport failure, 5xx or 429 is retryable; any other
// non-200 status is fatal. Reversible only to compensate (gives up: without a
// profile access cannot be decided); `undo` has nothing to revert (a read).
//
// Built by `make guests` with componentize-js against the world
// braid:workflow/reversible-step-component (see docs/writing-steps.md).

import { event } from 'braid:workflow/telemetry@0.1.1';

// A step error is the WIT variant `step-error`: throw one to fail the attempt.
const retryable = (message) => ({ tag: 'retryable', val: message });
const fatal = (message) => ({ tag: 'fatal', val: message });

function field(input, name) {
  const value = input[name];
  if (typeof value !== 'string') {
    throw fatal(`input field \`${name}\` is missing or not a string`);
  }
  return value;
}

function parseInput(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw fatal(`input is not JSON: ${e.message}`);
  }
}

function statusError(what, status, body) {
  const message = `${what}: HTTP ${status}: ${body.slice(0, 200)}`;
  return status >= 500 || status === 429 ? retryable(message) : fatal(message);
}

export const step = {
  async run(ctx, inputText) {
    const input = parseInput(inputText);
    const apiBase = field(input, 'api_base');
    const userId = field(input, 'user_id');
    const token = field(input, 'token');
    const what = 'profile fetch';
    const started = performance.now();
    let response;
    try {
      response = await fetch(`${apiBase}/users/${userId}/profile`, {
        headers: { authorization: `Bearer ${token}` },
      });
    } catch (e) {
      throw retryable(`${what}: ${e.message ?? e}`);
    }
    const body = await response.text();
    const apiMs = performance.now() - started;
    if (response.status !== 200) {
      throw statusError(what, response.status, body);
    }
    let profile;
    try {
      profile = JSON.parse(body);
    } catch (e) {
      throw fatal(`${what}: response is not JSON: ${e.message}`);
    }
    profile.api_ms = apiMs;
    event(ctx, 'api.profile.fetched', [['api_ms', apiMs]], [['user_id', userId]]);
    return JSON.stringify(profile);
  },
};

export const reversible = {
  compensate(ctx, _input, error) {
    event(ctx, 'api.profile.unavailable', [], [['reason', `${error.tag}: ${error.val}`]]);
    return { tag: 'give-up' };
  },
  undo(_ctx, _input, _output) {},
};
