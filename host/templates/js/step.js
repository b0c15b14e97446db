// Step `__NAME__`: greets `name`, and POSTs the greeting to `url` if given.
//
// Input: { "name": "...", "url": "http://..." or "" }. Output: { "greeting":
// "hello, ...", "trace_id": "...", "posted": { "status": 200, "answer": ... } }
// (`posted` only with a `url`).
// Throw a `step-error` variant to fail the attempt: { tag: 'fatal', val: msg }
// (retrying cannot help) or { tag: 'retryable', val: msg }. `run` may be
// async: `await fetch(url)` goes out through the host, which allows only the
// step's `allowed_hosts` and adds the run's `traceparent`.

import { log, event } from 'braid:workflow/telemetry@0.1.1';

const fatal = (message) => ({ tag: 'fatal', val: message });
const retryable = (message) => ({ tag: 'retryable', val: message });

export const step = {
  async run(ctx, inputText) {
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
    const output = { greeting: `hello, ${name}`, trace_id: ctx.traceId };
    const url = input?.url;
    if (url) {
      // A URL needs its scheme: 'http://127.0.0.1:8080/x', not '127.0.0.1:8080/x'.
      if (!/^https?:\/\//.test(url)) throw fatal(`URL needs its scheme, http:// or https://: ${url}`);
      let response;
      try {
        response = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json' },
          body: JSON.stringify({ greeting: output.greeting }),
        });
      } catch (e) {
        throw retryable(`POST ${url}: ${e.message ?? e}`);
      }
      const text = await response.text();
      let answer = null;
      try {
        answer = text.trim() ? JSON.parse(text) : null;
      } catch {
        throw fatal(`POST ${url}: answer ${response.status} is not JSON`);
      }
      output.posted = { status: response.status, answer };
    }
    return JSON.stringify(output);
  },
};
