/* Policy `__NAME__`: allows `read`, denies everything else.
 *
 * Input: a JSON object of facts, here { "action": "...", "resource": "..." }.
 * Return false with *err (a malloc'd message) when the policy cannot decide
 * (malformed input); the host treats that as a deny. Strings in *ret and
 * *err must be malloc'd (the bindings free them after the call); the
 * arguments are yours to free.
 *
 * bindings/braid.h is generated from wit/ (`make bindings` regenerates it
 * with `braid bindings c`); every function is documented there.
 */
#include "braid.h"
#include "braid_json.h"
#include "braid_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool exports_braid_workflow_policy_evaluate(braid_workflow_types_trace_context_t *ctx, braid_string_t *input,
                                            exports_braid_workflow_policy_decision_t *ret, braid_string_t *err) {
    bool ok = false;
    char *action = NULL, *resource = NULL;
    const char *facts = (const char *)input->ptr;
    bj_span value;
    if (!bj_valid(facts, input->len)) {
        *err = braid_text("input is not JSON");
        goto done;
    }
    if (!bj_member(facts, input->len, "action", &value) || !(action = bj_string(value)) || !*action) {
        *err = braid_text("input needs `action`");
        goto done;
    }
    if (!bj_member(facts, input->len, "resource", &value) || !(resource = bj_string(value)))
        resource = strdup("");
    if (!resource) {
        *err = braid_text("out of memory");
        goto done;
    }
    bool allow = strcmp(action, "read") == 0;
    /* Telemetry is best effort here: a policy decides even if logging fails. */
    braid_string_t line = braid_text("%s %s: allow=%s", action, resource, allow ? "true" : "false");
    braid_workflow_telemetry_telemetry_error_t refused;
    if (!braid_workflow_telemetry_log(ctx, BRAID_WORKFLOW_TELEMETRY_LEVEL_DEBUG, &line, &refused))
        braid_workflow_telemetry_telemetry_error_free(&refused);
    braid_string_free(&line);

    braid_string_t *reason = malloc(sizeof *reason);
    if (!reason) {
        *err = braid_text("out of memory");
        goto done;
    }
    *reason = allow ? braid_text("`read` is allowed on `%s`", resource)
                    : braid_text("only `read` is allowed, not `%s`", action);
    ret->allow = allow;
    ret->reasons = (braid_list_string_t){reason, 1};
    ret->obligations = (braid_list_tuple2_string_string_t){NULL, 0};
    ok = true;
done:
    free(action);
    free(resource);
    braid_workflow_types_trace_context_free(ctx);
    braid_string_free(input);
    return ok;
}
