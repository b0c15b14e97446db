// Step `__NAME__`: greets `name`.
//
// Input: { "name": "..." }. Output: { "greeting": "hello, ...", "trace_id": "..." }.
// Throw a `step-error` variant to fail the attempt: { tag: 'fatal', val: msg }
// (retrying cannot help) or { tag: 'retryable', val: msg }. `run` may be
// async: `await fetch(url)` goes out through the host, which allows only the
// step's `allowed_hosts` and adds the run's `traceparent`.

import { log, event } from 'braid:workflow/telemetry@0.1.1';

const fatal = (message) => ({ tag: 'fatal', val: message });

export const step = {
  run(ctx, inputText) {
    let input;
    try {
      input = JSON.parse(inputText);
    } catch (e) {
      throw fatal(`input is not JSON: ${e.message}`);
    }
    const name = input?.name;
    if (typeof name !== 'string') {
      throw fatal('input field `name` is missing or not a string');
    }
    // Every host call takes the attempt's own trace context, unchanged.
    log(ctx, 'info', `greeting ${name}`);
    event(ctx, '__NAME__.greeted', [['name_chars', [...name].length]], []);
    return JSON.stringify({ greeting: `hello, ${name}`, trace_id: ctx.traceId });
  },
};
