/* Step `claim_work_c`: the C twin of the Rust step `claim_work` (same
 * input, output, events and errors). Claims the work item through the
 * host's coordination interface, so no other run works on it while the
 * lease lasts.
 *
 * Input: { "work_item": "...", "lease_ms": 30000, "user_id", "resource",
 * "action", "decision": {...} }. Output: the granted claim. A conflict is
 * fatal and names the holder's run and trace id.
 *
 * Reversible: `undo` releases the claim (a claim already gone is fine, so
 * undo is idempotent); `compensate` gives up, never stealing a held item.
 *
 * Built by `make guests` with clang and wasi-libc; bindings from
 * `braid bindings c --world reversible-step-component`.
 */
#include "braid.h"
#include "braid_json.h"
#include "braid_text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_LEASE_MS 30000

/* A braid string's bytes as a C string view for printf: "%.*s". */
#define S(s) (int)(s).len, (const char *)(s).ptr

static braid_string_t take(bj_buf *b) {
    braid_string_t s = {(uint8_t *)b->ptr, b->len};
    *b = (bj_buf){0};
    return s;
}

/* Sets *err to a step error of kind `tag` with a formatted message. */
static bool step_error(braid_workflow_types_step_error_t *err, uint8_t tag, const char *format, ...) {
    va_list args;
    va_start(args, format);
    err->tag = tag;
    err->val.fatal = braid_vtext(format, args);
    va_end(args);
    return false;
}

static void event(braid_workflow_types_trace_context_t *ctx, const char *name, const char *measure,
                  double value, const char *keys[], const braid_string_t values[], size_t pairs) {
    braid_tuple2_string_f64_t m = {{(uint8_t *)measure, measure ? strlen(measure) : 0}, value};
    braid_list_tuple2_string_f64_t measurements = {&m, measure ? 1 : 0};
    braid_tuple2_string_string_t meta[4];
    for (size_t i = 0; i < pairs && i < 4; i++)
        meta[i] = (braid_tuple2_string_string_t){{(uint8_t *)keys[i], strlen(keys[i])}, values[i]};
    braid_list_tuple2_string_string_t metadata = {meta, pairs};
    braid_string_t event_name = {(uint8_t *)name, strlen(name)};
    braid_workflow_telemetry_telemetry_error_t refused;
    /* Telemetry is best effort: a refusal goes to stderr (the host logs it). */
    if (!braid_workflow_telemetry_event(ctx, &event_name, &measurements, &metadata, &refused)) {
        fprintf(stderr, "braid telemetry event refused\n");
        braid_workflow_telemetry_telemetry_error_free(&refused);
    }
}

/* `member` of the input object, raw, or `null`. */
static void raw_or_null(bj_buf *out, const braid_string_t *input, const char *member) {
    bj_span value;
    if (bj_member((const char *)input->ptr, input->len, member, &value))
        bj_raw(out, value.ptr, value.len);
    else
        bj_puts(out, "null");
}

static void claim_json(bj_buf *out, const braid_workflow_coordination_work_claim_t *c) {
    const struct {
        const char *key;
        const braid_string_t *value;
    } texts[] = {{"claim_id", &c->claim_id}, {"owner", &c->owner}, {"run_id", &c->run_id},
                 {"span_id", &c->span_id},   {"step", &c->step},   {"trace_id", &c->trace_id},
                 {"work_item", &c->work_item}};
    bj_puts(out, "{\"claimed_at_ms\":");
    bj_u64_out(out, c->claimed_at_ms);
    bj_puts(out, ",\"expires_at_ms\":");
    bj_u64_out(out, c->expires_at_ms);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        bj_puts(out, ",\"");
        bj_puts(out, texts[i].key);
        bj_puts(out, "\":");
        bj_string_out(out, (const char *)texts[i].value->ptr, texts[i].value->len);
    }
    bj_puts(out, "}");
}

static const char *claim_error_name(uint8_t tag) {
    static const char *names[] = {"Conflict", "NotHeld", "InvalidContext", "InvalidArgument", "Unavailable", "LimitReached"};
    return tag < sizeof names / sizeof names[0] ? names[tag] : "Unknown";
}

bool exports_braid_workflow_step_run(braid_workflow_types_trace_context_t *ctx, braid_string_t *input,
                                     braid_string_t *ret, braid_workflow_types_step_error_t *err) {
    bool ok = false;
    char *work_item = NULL;
    bj_buf metadata = {0}, out = {0};
    const char *text = (const char *)input->ptr;
    bj_span value;
    if (!bj_valid(text, input->len)) {
        step_error(err, BRAID_WORKFLOW_TYPES_STEP_ERROR_FATAL, "input is not JSON");
        goto done;
    }
    if (!bj_member(text, input->len, "work_item", &value) || !(work_item = bj_string(value))) {
        step_error(err, BRAID_WORKFLOW_TYPES_STEP_ERROR_FATAL, "input field `work_item` is missing or not a string");
        goto done;
    }
    uint64_t lease_ms = DEFAULT_LEASE_MS;
    if (bj_member(text, input->len, "lease_ms", &value) && !bj_u64(value, &lease_ms))
        lease_ms = DEFAULT_LEASE_MS;

    /* The same metadata as the Rust step (keys in serde_json's order). */
    bj_span decision;
    bj_puts(&metadata, "{\"action\":");
    raw_or_null(&metadata, input, "action");
    bj_puts(&metadata, ",\"obligations\":");
    if (bj_member(text, input->len, "decision", &decision) &&
        bj_member(decision.ptr, decision.len, "obligations", &value))
        bj_raw(&metadata, value.ptr, value.len);
    else
        bj_puts(&metadata, "null");
    bj_puts(&metadata, ",\"resource\":");
    raw_or_null(&metadata, input, "resource");
    bj_puts(&metadata, ",\"user_id\":");
    raw_or_null(&metadata, input, "user_id");
    bj_puts(&metadata, "}");
    if (metadata.failed) {
        step_error(err, BRAID_WORKFLOW_TYPES_STEP_ERROR_RETRYABLE, "out of memory");
        goto done;
    }

    braid_string_t item = {(uint8_t *)work_item, strlen(work_item)};
    braid_string_t meta = {(uint8_t *)metadata.ptr, metadata.len};
    braid_workflow_coordination_work_claim_t claim;
    braid_workflow_coordination_claim_error_t refused;
    if (braid_workflow_coordination_claim(ctx, &item, lease_ms, &meta, &claim, &refused)) {
        const char *keys[] = {"work_item", "claim_id"};
        braid_string_t values[] = {item, claim.claim_id};
        event(ctx, "coordination.claimed", "lease_ms", (double)lease_ms, keys, values, 2);
        claim_json(&out, &claim);
        braid_workflow_coordination_work_claim_free(&claim);
        if (out.failed) {
            step_error(err, BRAID_WORKFLOW_TYPES_STEP_ERROR_RETRYABLE, "out of memory");
            goto done;
        }
        *ret = take(&out);
        ok = true;
    } else if (refused.tag == BRAID_WORKFLOW_COORDINATION_CLAIM_ERROR_CONFLICT) {
        braid_workflow_coordination_work_claim_t *holder = &refused.val.conflict;
        const char *keys[] = {"work_item", "holder_trace_id"};
        braid_string_t values[] = {item, holder->trace_id};
        event(ctx, "coordination.conflict", NULL, 0, keys, values, 2);
        if (holder->run_id.len == 0) {
            /* A holder of another workflow is not named by the host. */
            step_error(err, BRAID_WORKFLOW_TYPES_STEP_ERROR_FATAL,
                       "work item `%s` is already claimed by a run of another workflow until %llu ms",
                       work_item, (unsigned long long)holder->expires_at_ms);
        } else {
            step_error(err, BRAID_WORKFLOW_TYPES_STEP_ERROR_FATAL,
                       "work item `%s` is already claimed by run %.*s (trace %.*s, step `%.*s`) until %llu ms",
                       work_item, S(holder->run_id), S(holder->trace_id), S(holder->step),
                       (unsigned long long)holder->expires_at_ms);
        }
        braid_workflow_coordination_claim_error_free(&refused);
    } else if (refused.tag == BRAID_WORKFLOW_COORDINATION_CLAIM_ERROR_UNAVAILABLE) {
        step_error(err, BRAID_WORKFLOW_TYPES_STEP_ERROR_RETRYABLE, "claim store unavailable: %.*s",
                   S(refused.val.unavailable));
        braid_workflow_coordination_claim_error_free(&refused);
    } else {
        /* Every other case carries one string (the Rust step prints it Debug). */
        step_error(err, BRAID_WORKFLOW_TYPES_STEP_ERROR_FATAL, "claim refused: %s(\"%.*s\")",
                   claim_error_name(refused.tag), S(refused.val.not_held));
        braid_workflow_coordination_claim_error_free(&refused);
    }
done:
    free(work_item);
    bj_free(&metadata);
    bj_free(&out);
    braid_workflow_types_trace_context_free(ctx);
    braid_string_free(input);
    return ok;
}

void exports_braid_workflow_reversible_compensate(braid_workflow_types_trace_context_t *ctx, braid_string_t *input,
                                                  braid_workflow_types_step_error_t *error,
                                                  exports_braid_workflow_reversible_compensation_t *ret) {
    braid_workflow_types_trace_context_free(ctx);
    braid_string_free(input);
    braid_workflow_types_step_error_free(error);
    ret->tag = EXPORTS_BRAID_WORKFLOW_REVERSIBLE_COMPENSATION_GIVE_UP;
}

bool exports_braid_workflow_reversible_undo(braid_workflow_types_trace_context_t *ctx, braid_string_t *input,
                                            braid_string_t *output, braid_workflow_types_step_error_t *err) {
    bool ok = false;
    char *claim_id = NULL;
    bj_span value;
    if (!bj_member((const char *)output->ptr, output->len, "claim_id", &value) || !(claim_id = bj_string(value))) {
        step_error(err, BRAID_WORKFLOW_TYPES_STEP_ERROR_FATAL, "input field `claim_id` is missing or not a string");
        goto done;
    }
    braid_string_t id = {(uint8_t *)claim_id, strlen(claim_id)};
    braid_workflow_coordination_claim_error_t refused;
    bool released = braid_workflow_coordination_release(ctx, &id, &refused);
    if (released || refused.tag == BRAID_WORKFLOW_COORDINATION_CLAIM_ERROR_NOT_HELD) {
        const char *keys[] = {"claim_id"};
        braid_string_t values[] = {id};
        event(ctx, "coordination.released", NULL, 0, keys, values, 1);
        ok = true;
    } else if (refused.tag == BRAID_WORKFLOW_COORDINATION_CLAIM_ERROR_UNAVAILABLE) {
        step_error(err, BRAID_WORKFLOW_TYPES_STEP_ERROR_RETRYABLE, "claim store unavailable: %.*s",
                   S(refused.val.unavailable));
    } else {
        step_error(err, BRAID_WORKFLOW_TYPES_STEP_ERROR_FATAL, "release refused: %s(\"%.*s\")",
                   claim_error_name(refused.tag), S(refused.val.not_held));
    }
    if (!released)
        braid_workflow_coordination_claim_error_free(&refused);
done:
    free(claim_id);
    braid_workflow_types_trace_context_free(ctx);
    braid_string_free(input);
    braid_string_free(output);
    return ok;
}
