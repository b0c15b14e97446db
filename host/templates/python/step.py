"""Step `__NAME__`: greets `name`, and POSTs the greeting to `url` if given.

Input: {"name": "...", "url": "http://..." or ""}. Output: {"greeting":
"hello, ...", "trace_id": "...", "posted": {"status": 200, "answer": ...}}
(`posted` only with a `url`). Outbound HTTP goes through braid_http.py
(wasi:http; the host adds the run's `traceparent`); the step's
`allowed_hosts` in workflow.toml says where it may go.
A missing `name` is a fatal error (retrying cannot help); raise
Err(StepError_Retryable(...)) for failures worth another attempt.

`wit_world` is generated from wit/ by componentize-py at build time
(`componentize-py -d wit -w braid:workflow/__WORLD__@0.1.1 bindings out/`
writes it out if your editor wants to see it). In a step's world braid's
`types` interface is the module `braid_workflow_types` (wasi:http has a
`types` too); in a policy's world it is plain `types`.
"""

import json

import braid_http
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import telemetry
from wit_world.imports.braid_workflow_types import (
    StepError_Fatal,
    StepError_Retryable,
    TraceContext,
)


class Step(exports.Step):
    def run(self, ctx: TraceContext, input: str) -> str:
        try:
            args = json.loads(input)
        except ValueError as e:
            raise Err(StepError_Fatal(f"input is not JSON: {e}"))
        name = args.get("name") if isinstance(args, dict) else None
        if not isinstance(name, str):
            raise Err(StepError_Fatal("input field `name` is missing or not a string"))
        # Every host call takes the attempt's own trace context, unchanged.
        telemetry.log(ctx, telemetry.Level.INFO, f"greeting {name}")
        telemetry.event(ctx, "__NAME__.greeted", [("name_chars", float(len(name)))], [])
        output = {"greeting": f"hello, {name}", "trace_id": ctx.trace_id}
        url = args.get("url")
        if url:
            # A URL needs its scheme: "http://127.0.0.1:8080/x", not "127.0.0.1:8080/x".
            try:
                status, answer = braid_http.post_json(url, {"greeting": output["greeting"]})
            except (braid_http.BadUrl, braid_http.Denied) as e:
                # Retrying the same URL cannot help.
                raise Err(StepError_Fatal(str(e)))
            except braid_http.HttpError as e:
                raise Err(StepError_Retryable(str(e)))
            output["posted"] = {"status": status, "answer": answer}
        return json.dumps(output)
