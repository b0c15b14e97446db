"""Step `__NAME__`: greets `name`.

Input: {"name": "..."}. Output: {"greeting": "hello, ...", "trace_id": "..."}.
A missing `name` is a fatal error (retrying cannot help); raise
Err(StepError_Retryable(...)) for failures worth another attempt.

`wit_world` is generated from wit/ by componentize-py at build time
(`componentize-py -d wit -w braid:workflow/__WORLD__@0.1.1 bindings out/`
writes it out if your editor wants to see it). In a step's world braid's
`types` interface is the module `braid_workflow_types` (wasi:http has a
`types` too); in a policy's world it is plain `types`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import telemetry
from wit_world.imports.braid_workflow_types import StepError_Fatal, TraceContext


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
        return json.dumps({"greeting": f"hello, {name}", "trace_id": ctx.trace_id})
