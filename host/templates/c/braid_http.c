/* braid_http: see braid_http.h. Every handle it makes is dropped before it
 * returns, children before their parents, as wasi:http requires. */
#include "braid_http.h"

#include "braid.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bh_outcome fail(bh_outcome outcome, char **error, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int len = vsnprintf(NULL, 0, format, args);
    va_end(args);
    *error = malloc((size_t)len + 1);
    if (*error) {
        va_start(args, format);
        vsnprintf(*error, (size_t)len + 1, format, args);
        va_end(args);
    }
    return outcome;
}

static const char *error_code_name(const wasi_http_types_error_code_t *code) {
    static const char *names[] = {
        "DNS timeout", "DNS error", "destination not found", "destination unavailable",
        "destination IP prohibited", "destination IP unroutable", "connection refused",
        "connection terminated", "connection timeout", "connection read timeout",
        "connection write timeout", "connection limit reached", "TLS protocol error",
        "TLS certificate error", "TLS alert received", "request denied by the host",
        "request length required", "request body size", "request method invalid",
        "request URI invalid", "request URI too long", "request header section size",
        "request header size", "request trailer section size", "request trailer size",
        "response incomplete", "response header section size", "response header size",
        "response body size", "response trailer section size", "response trailer size",
        "response transfer coding", "response content coding", "response timeout",
        "HTTP upgrade failed", "HTTP protocol error", "loop detected",
        "configuration error", "internal error",
    };
    return code->tag < sizeof names / sizeof names[0] ? names[code->tag] : "unknown error";
}

/* A request that got no response: the host's refusal (fatal: the step's
 * allowlist will not change by retrying), or a transport error (retryable). */
static bh_outcome failed(const char *method, const char *url, const char *authority,
                         size_t authority_len, const wasi_http_types_error_code_t *code,
                         char **error) {
    if (code->tag == WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_DENIED)
        return fail(BH_FATAL, error,
                    "%s %s: refused by the host: %.*s is not in this step's allowed_hosts "
                    "(the workflow's allowed_hosts decides where a step may connect)",
                    method, url, (int)authority_len, authority);
    return fail(BH_RETRYABLE, error, "%s %s: %s", method, url, error_code_name(code));
}

/* Splits `url` into scheme, authority and path (pointers into `url`). */
static bool split_url(const char *url, uint8_t *scheme, const char **authority,
                      size_t *authority_len, const char **path) {
    const char *rest;
    if (strncmp(url, "http://", 7) == 0) {
        *scheme = WASI_HTTP_TYPES_SCHEME_HTTP;
        rest = url + 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        *scheme = WASI_HTTP_TYPES_SCHEME_HTTPS;
        rest = url + 8;
    } else {
        return false;
    }
    *authority = rest;
    *authority_len = strcspn(rest, "/?");
    *path = rest[*authority_len] == '/' ? rest + *authority_len : NULL;
    return *authority_len > 0;
}

static bool append_header(wasi_http_types_own_fields_t fields, const char *name, const char *value) {
    braid_string_t key = {(uint8_t *)name, strlen(name)};
    wasi_http_types_field_value_t bytes = {(uint8_t *)value, strlen(value)};
    wasi_http_types_header_error_t err;
    return wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(fields), &key, &bytes, &err);
}

/* Writes the whole body and finishes it (which drops it). */
static bool send_body(wasi_http_types_own_outgoing_body_t body, const char *bytes, size_t len) {
    wasi_http_types_own_output_stream_t stream;
    if (!wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &stream)) {
        wasi_http_types_outgoing_body_drop_own(body);
        return false;
    }
    bool ok = true;
    /* blocking-write-and-flush takes at most 4096 bytes a call. */
    for (size_t at = 0; ok && at < len; at += 4096) {
        size_t n = len - at < 4096 ? len - at : 4096;
        braid_list_u8_t chunk = {(uint8_t *)bytes + at, n};
        wasi_io_streams_stream_error_t err;
        ok = wasi_io_streams_method_output_stream_blocking_write_and_flush(
            wasi_io_streams_borrow_output_stream(stream), &chunk, &err);
        if (!ok && err.tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED)
            wasi_io_error_error_drop_own(err.val.last_operation_failed);
    }
    wasi_io_streams_output_stream_drop_own(stream);
    wasi_http_types_error_code_t err;
    bool finished = wasi_http_types_static_outgoing_body_finish(body, NULL, &err);
    if (!finished)
        wasi_http_types_error_code_free(&err);
    return ok && finished;
}

/* Reads the response body to its end, at most BH_MAX_RESPONSE_BYTES. */
static bh_outcome read_body(wasi_http_types_own_incoming_response_t response, const char *url,
                            bh_response *out, char **error) {
    wasi_http_types_own_incoming_body_t body;
    if (!wasi_http_types_method_incoming_response_consume(wasi_http_types_borrow_incoming_response(response), &body))
        return fail(BH_RETRYABLE, error, "%s: the response body is unavailable", url);
    wasi_http_types_own_input_stream_t stream;
    if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body), &stream)) {
        wasi_http_types_incoming_body_drop_own(body);
        return fail(BH_RETRYABLE, error, "%s: the response body stream is unavailable", url);
    }
    bh_outcome outcome = BH_OK;
    size_t len = 0, cap = 0;
    char *data = NULL;
    for (;;) {
        braid_list_u8_t chunk;
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_input_stream_blocking_read(wasi_io_streams_borrow_input_stream(stream), 64 * 1024, &chunk, &err)) {
            if (err.tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED) {
                wasi_io_error_error_drop_own(err.val.last_operation_failed);
                outcome = fail(BH_RETRYABLE, error, "%s: reading the response body failed", url);
            }
            break; /* closed: the end of the body */
        }
        if (len + chunk.len > BH_MAX_RESPONSE_BYTES) {
            braid_list_u8_free(&chunk);
            outcome = fail(BH_RETRYABLE, error, "%s: the response is longer than %u bytes", url,
                           BH_MAX_RESPONSE_BYTES);
            break;
        }
        if (len + chunk.len + 1 > cap) {
            cap = (len + chunk.len + 1) * 2;
            char *grown = realloc(data, cap);
            if (!grown) {
                braid_list_u8_free(&chunk);
                outcome = fail(BH_RETRYABLE, error, "%s: out of memory reading the response", url);
                break;
            }
            data = grown;
        }
        memcpy(data + len, chunk.ptr, chunk.len);
        len += chunk.len;
        braid_list_u8_free(&chunk);
    }
    wasi_io_streams_input_stream_drop_own(stream);
    wasi_http_types_incoming_body_drop_own(body);
    if (outcome != BH_OK) {
        free(data);
        return outcome;
    }
    if (!data && !(data = malloc(1)))
        return fail(BH_RETRYABLE, error, "%s: out of memory reading the response", url);
    data[len] = '\0';
    out->body = data;
    out->body_len = len;
    return BH_OK;
}

bh_outcome bh_request(const char *method, const char *url, const char *content_type,
                      const char *body, size_t body_len, bh_response *out, char **error) {
    *out = (bh_response){0};
    *error = NULL;
    uint8_t scheme_tag;
    const char *authority, *path;
    size_t authority_len;
    if (!split_url(url, &scheme_tag, &authority, &authority_len, &path))
        return fail(BH_FATAL, error, "URL needs its scheme, http:// or https://, and a host: %s", url);

    wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
    char length[24];
    snprintf(length, sizeof length, "%zu", body_len);
    if ((body && content_type && !append_header(headers, "content-type", content_type)) ||
        (body && !append_header(headers, "content-length", length))) {
        wasi_http_types_fields_drop_own(headers);
        return fail(BH_FATAL, error, "%s: a header was refused", url);
    }
    wasi_http_types_own_outgoing_request_t request = wasi_http_types_constructor_outgoing_request(headers);
    wasi_http_types_borrow_outgoing_request_t req = wasi_http_types_borrow_outgoing_request(request);
    wasi_http_types_method_t m = {.tag = WASI_HTTP_TYPES_METHOD_OTHER};
    static const char *methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    for (uint8_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (strcmp(method, methods[i]) == 0)
            m.tag = i;
    if (m.tag == WASI_HTTP_TYPES_METHOD_OTHER)
        m.val.other = (braid_string_t){(uint8_t *)method, strlen(method)};
    wasi_http_types_scheme_t scheme = {.tag = scheme_tag};
    braid_string_t auth = {(uint8_t *)authority, authority_len};
    braid_string_t path_query = {(uint8_t *)(path ? path : "/"), path ? strlen(path) : 1};
    wasi_http_types_own_outgoing_body_t outgoing;
    if (!wasi_http_types_method_outgoing_request_set_method(req, &m) ||
        !wasi_http_types_method_outgoing_request_set_scheme(req, &scheme) ||
        !wasi_http_types_method_outgoing_request_set_authority(req, &auth) ||
        !wasi_http_types_method_outgoing_request_set_path_with_query(req, &path_query) ||
        !wasi_http_types_method_outgoing_request_body(req, &outgoing)) {
        wasi_http_types_outgoing_request_drop_own(request);
        return fail(BH_FATAL, error, "%s: the request was refused (method, authority or path)", url);
    }

    wasi_http_types_own_future_incoming_response_t future;
    wasi_http_types_error_code_t code;
    if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &code)) {
        wasi_http_types_outgoing_body_drop_own(outgoing);
        bh_outcome outcome = failed(method, url, authority, authority_len, &code, error);
        wasi_http_types_error_code_free(&code);
        return outcome;
    }
    /* A denied request closes the body stream; the response says why, so
     * its error wins over a failed send. */
    bool sent = send_body(outgoing, body ? body : "", body ? body_len : 0);

    wasi_http_types_own_pollable_t ready =
        wasi_http_types_method_future_incoming_response_subscribe(wasi_http_types_borrow_future_incoming_response(future));
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
    wasi_io_poll_pollable_drop_own(ready);
    wasi_http_types_result_result_own_incoming_response_error_code_void_t result;
    bool got = wasi_http_types_method_future_incoming_response_get(
        wasi_http_types_borrow_future_incoming_response(future), &result);
    wasi_http_types_future_incoming_response_drop_own(future);
    if (!got || result.is_err)
        return fail(BH_RETRYABLE, error, "%s %s: no response", method, url);
    if (result.val.ok.is_err) {
        wasi_http_types_error_code_t *e = &result.val.ok.val.err;
        bh_outcome outcome = failed(method, url, authority, authority_len, e, error);
        wasi_http_types_error_code_free(e);
        return outcome;
    }
    wasi_http_types_own_incoming_response_t response = result.val.ok.val.ok;
    if (!sent) {
        wasi_http_types_incoming_response_drop_own(response);
        return fail(BH_RETRYABLE, error, "%s %s: sending the request body failed", method, url);
    }
    out->status = wasi_http_types_method_incoming_response_status(wasi_http_types_borrow_incoming_response(response));
    bh_outcome outcome = read_body(response, url, out, error);
    wasi_http_types_incoming_response_drop_own(response);
    return outcome;
}

void bh_response_free(bh_response *response) {
    free(response->body);
    *response = (bh_response){0};
}
