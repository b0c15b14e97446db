/* Step `__NAME__`: greets `name`, and POSTs the greeting to `url` if given.
 *
 * Input: { "name": "...", "url": "http://..." or "" }. Output: { "greeting":
 * "hello, ...", "trace_id": "...", "posted": { "status": 200, "answer": ... } }
 * (`posted` only with a `url`). Outbound HTTP goes through braid_http.c
 * (wasi:http; the host adds the run's `traceparent`); the step's
 * `allowed_hosts` in workflow.toml says where it may go. JSON in and out
 * goes through braid_json.c, formatted text through braid_text.c.
 *
 * Return false with *err set to fail the attempt: ..._STEP_ERROR_FATAL
 * (retrying cannot help) or ..._STEP_ERROR_RETRYABLE. The host owns nothing
 * you return: strings in *ret and *err must be malloc'd (the bindings free
 * them after the call); the arguments are yours to free.
 *
 * bindings/braid.h is generated from wit/ (`make bindings` regenerates it
 * with `braid bindings c`); every function is documented there.
 */
#include "braid.h"
#include "braid_http.h"
#include "braid_json.h"
#include "braid_text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fails the attempt: sets *err to a step error of kind `tag`. */
static bool fail(braid_workflow_types_step_error_t *err, uint8_t tag, const char *format, ...) {
    va_list args;
    va_start(args, format);
    err->tag = tag;
    err->val.fatal = braid_vtext(format, args);
    va_end(args);
    return false;
}

/* Characters (code points), not bytes, of UTF-8 text. */
static size_t utf8_chars(const char *text) {
    size_t n = 0;
    for (; *text; text++)
        n += ((unsigned char)*text & 0xC0) != 0x80;
    return n;
}

#define FATAL BRAID_WORKFLOW_TYPES_STEP_ERROR_FATAL
#define RETRYABLE BRAID_WORKFLOW_TYPES_STEP_ERROR_RETRYABLE

/* POSTs {"greeting": ...} to `url`; appends "posted": {...} to `out`. */
static bool post_greeting(const char *url, const char *greeting, bj_buf *out,
                          braid_workflow_types_step_error_t *err) {
    bj_buf body = {0};
    bj_puts(&body, "{\"greeting\":");
    bj_string_out(&body, greeting, strlen(greeting));
    bj_puts(&body, "}");
    bh_response response;
    char *error;
    bh_outcome outcome = bh_request("POST", url, "application/json", body.ptr, body.len, &response, &error);
    bj_free(&body);
    if (outcome != BH_OK) {
        /* A URL without its scheme, or a host off the allowlist: fatal. */
        /* bh_request's error already says "POST URL: why". */
        bool ok = error ? fail(err, outcome == BH_FATAL ? FATAL : RETRYABLE, "%s", error)
                        : fail(err, outcome == BH_FATAL ? FATAL : RETRYABLE, "POST %s", url);
        free(error);
        return ok;
    }
    if (!bj_valid(response.body, response.body_len)) {
        uint16_t status = response.status;
        bh_response_free(&response);
        return fail(err, FATAL, "POST %s: answer %u is not JSON", url, status);
    }
    bj_puts(out, ",\"posted\":{\"status\":");
    bj_u64_out(out, response.status);
    bj_puts(out, ",\"answer\":");
    bj_raw(out, response.body, response.body_len);
    bj_puts(out, "}");
    bh_response_free(&response);
    return true;
}

bool exports_braid_workflow_step_run(braid_workflow_types_trace_context_t *ctx, braid_string_t *input,
                                     braid_string_t *ret, braid_workflow_types_step_error_t *err) {
    bool ok = false;
    char *name = NULL, *url = NULL, *greeting = NULL;
    bj_buf out = {0};
    const char *text = (const char *)input->ptr;
    bj_span value;
    if (!bj_valid(text, input->len)) {
        fail(err, FATAL, "input is not JSON");
        goto done;
    }
    if (!bj_member(text, input->len, "name", &value) || !(name = bj_string(value))) {
        fail(err, FATAL, "input field `name` is missing or not a string");
        goto done;
    }
    /* Every host call takes the attempt's own trace context, unchanged. */
    braid_string_t line = braid_text("greeting %s", name);
    braid_workflow_telemetry_telemetry_error_t refused;
    bool logged = braid_workflow_telemetry_log(ctx, BRAID_WORKFLOW_TELEMETRY_LEVEL_INFO, &line, &refused);
    braid_string_free(&line);
    if (!logged) {
        braid_workflow_telemetry_telemetry_error_free(&refused);
        fail(err, FATAL, "log refused");
        goto done;
    }
    braid_tuple2_string_f64_t chars = {{(uint8_t *)"name_chars", 10}, (double)utf8_chars(name)};
    braid_list_tuple2_string_f64_t measurements = {&chars, 1};
    braid_list_tuple2_string_string_t metadata = {NULL, 0};
    braid_string_t event = {(uint8_t *)"__NAME__.greeted", strlen("__NAME__.greeted")};
    if (!braid_workflow_telemetry_event(ctx, &event, &measurements, &metadata, &refused)) {
        braid_workflow_telemetry_telemetry_error_free(&refused);
        fail(err, FATAL, "event refused");
        goto done;
    }

    if ((greeting = malloc(strlen(name) + 8)))
        sprintf(greeting, "hello, %s", name);
    bj_puts(&out, "{\"greeting\":");
    bj_string_out(&out, greeting ? greeting : "", greeting ? strlen(greeting) : 0);
    bj_puts(&out, ",\"trace_id\":");
    bj_string_out(&out, (const char *)ctx->trace_id.ptr, ctx->trace_id.len);
    if (bj_member(text, input->len, "url", &value) && (url = bj_string(value)) && *url) {
        /* A URL needs its scheme: "http://127.0.0.1:8080/x", not "127.0.0.1:8080/x". */
        if (!post_greeting(url, greeting ? greeting : "", &out, err))
            goto done;
    }
    bj_puts(&out, "}");
    if (!greeting || out.failed) {
        fail(err, RETRYABLE, "out of memory");
        goto done;
    }
    *ret = (braid_string_t){(uint8_t *)out.ptr, out.len};
    out = (bj_buf){0};
    ok = true;
done:
    free(name);
    free(url);
    free(greeting);
    bj_free(&out);
    braid_workflow_types_trace_context_free(ctx);
    braid_string_free(input);
    return ok;
}
