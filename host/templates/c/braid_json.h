/* braid_json: the little JSON a C step needs, with no library.
 *
 * Reading: find a member of the input object and read it as a string or an
 * integer, or take its raw JSON text to pass on. Writing: a growable buffer
 * with JSON string escaping. Every function checks its input's bounds; a
 * malformed document reads as "member absent", never out of bounds.
 * Nesting deeper than BJ_MAX_DEPTH is treated as malformed.
 */
#ifndef BRAID_JSON_H
#define BRAID_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BJ_MAX_DEPTH 64

/* A slice of a JSON document: one value's raw text. */
typedef struct {
    const char *ptr;
    size_t len;
} bj_span;

/* True when `text` is exactly one JSON value (surrounding whitespace allowed). */
bool bj_valid(const char *text, size_t len);

/* The raw value of member `key` of the JSON object `text`, into *out.
 * False when `text` is not an object or has no such member. */
bool bj_member(const char *text, size_t len, const char *key, bj_span *out);

/* A JSON string value, unescaped, as a malloc'd NUL-terminated UTF-8 string
 * (free it). NULL when the value is not a string (or holds a \u0000). */
char *bj_string(bj_span value);

/* A JSON number that is a non-negative integer. False otherwise. */
bool bj_u64(bj_span value, uint64_t *out);

/* A growable output buffer; start with {0}. `failed` is set (and further
 * writes ignored) if memory runs out. */
typedef struct {
    char *ptr;
    size_t len, cap;
    bool failed;
} bj_buf;

void bj_raw(bj_buf *b, const char *text, size_t len);
void bj_puts(bj_buf *b, const char *text);
/* `text` (UTF-8, `len` bytes) as a quoted, escaped JSON string. */
void bj_string_out(bj_buf *b, const char *text, size_t len);
void bj_u64_out(bj_buf *b, uint64_t n);
void bj_free(bj_buf *b);

#endif
