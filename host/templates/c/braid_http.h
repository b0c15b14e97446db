/* braid_http: blocking HTTP requests from a C step, over wasi:http.
 *
 * The host decides where a step may connect (the step's `allowed_hosts`)
 * and adds the run's `traceparent`/`tracestate` to every request; this
 * helper only builds the request and reads the response. It needs the
 * bindings of a step world (`braid.h`, from `braid bindings c`).
 *
 * A URL needs its scheme: "http://127.0.0.1:8080/x", not "127.0.0.1:8080/x"
 * (wasi:http would send the latter as HTTPS); bh_request refuses one
 * without.
 */
#ifndef BRAID_HTTP_H
#define BRAID_HTTP_H

#include <stddef.h>
#include <stdint.h>

/* The most of a response body bh_request reads; more is an error. */
#define BH_MAX_RESPONSE_BYTES (4u << 20)

typedef struct {
    uint16_t status;
    /* The body, NUL-terminated for convenience (it may hold NULs). */
    char *body;
    size_t body_len;
} bh_response;

typedef enum {
    BH_OK = 0,
    /* The URL is unusable, or the host refused the destination: retrying
     * cannot help (a fatal step error). */
    BH_FATAL = 1,
    /* The transport failed (refused, reset, timed out, too long): a retry
     * may pass (a retryable step error). */
    BH_RETRYABLE = 2,
} bh_outcome;

/* Sends `method` `url` with `body` (may be NULL; `content_type` names it).
 * On BH_OK, *out holds the response (free it with bh_response_free);
 * otherwise *error holds a malloc'd message naming the URL (free it). */
bh_outcome bh_request(const char *method, const char *url, const char *content_type,
                      const char *body, size_t body_len, bh_response *out, char **error);

void bh_response_free(bh_response *response);

#endif
