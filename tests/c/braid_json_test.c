/* Tests of the C scaffold's JSON helper (host/templates/c/braid_json.c),
 * built natively with the sanitizers and run by tests/languages.rs: every
 * read stays inside its input, escapes and UTF-8 round-trip, and malformed
 * or too-deep documents read as absent. */
#include "braid_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
/* The exact-length copies member() makes, freed at the end. */
static char *copies[64];
static size_t ncopies;

#define CHECK(cond)                                                   \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                               \
        }                                                             \
    } while (0)

/* Member `key` of `json`, or a span with a NULL pointer. The input is
 * copied to a buffer of exactly its length, so a read past it is caught. */
static bj_span member(const char *json, const char *key) {
    size_t len = strlen(json);
    char *exact = malloc(len ? len : 1);
    memcpy(exact, json, len);
    if (ncopies < sizeof copies / sizeof copies[0])
        copies[ncopies++] = exact;
    bj_span value = {0};
    if (!bj_member(exact, len, key, &value))
        value.ptr = NULL;
    return value;
}

int main(void) {
    const char *doc = " { \"a\" : \"x\\\"y\\u00e9\\ud83d\\ude00\" , \"n\": 30000, "
                      "\"o\": {\"k\": [1, 2.5e3, true, null]}, \"z\": -1 } ";
    bj_span v = member(doc, "a");
    CHECK(v.ptr != NULL);
    char *text = v.ptr ? bj_string(v) : NULL;
    CHECK(text && strcmp(text, "x\"y\xc3\xa9\xf0\x9f\x98\x80") == 0);
    free(text);

    uint64_t n = 0;
    v = member(doc, "n");
    CHECK(v.ptr && bj_u64(v, &n) && n == 30000);
    v = member(doc, "o");
    CHECK(v.ptr && v.len == strlen("{\"k\": [1, 2.5e3, true, null]}"));
    v = member(doc, "z");
    CHECK(v.ptr && !bj_u64(v, &n));
    CHECK(!member(doc, "missing").ptr);

    /* Malformed documents: nothing is found in them. */
    const char *bad[] = {"{\"a\": }", "{\"a\": \"x", "[1]", "{\"a\": 1} x", "{\"a\" 1}",
                         "{\"a\": 01}", "{\"a\": \"\\u12\"}", "{\"a\": \"\\q\"}", "", "{"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(!member(bad[i], "a").ptr);

    /* Nesting: 30 levels are read, 100 are refused. */
    char deep[201];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    CHECK(!bj_valid(deep, 200));
    memset(deep, '[', 30);
    memset(deep + 30, ']', 30);
    CHECK(bj_valid(deep, 60));

    /* A \u0000 cannot become a C string. */
    CHECK(bj_string((bj_span){"\"a\\u0000b\"", 10}) == NULL);

    /* Integers: no sign, no leading zero, no overflow. */
    CHECK(bj_u64((bj_span){"18446744073709551615", 20}, &n) && n == 18446744073709551615ull);
    CHECK(!bj_u64((bj_span){"18446744073709551616", 20}, &n));
    CHECK(!bj_u64((bj_span){"007", 3}, &n));

    /* Writing: quotes, backslashes, control characters escaped; UTF-8 kept. */
    bj_buf out = {0};
    bj_string_out(&out, "q\"\\\n\x01\xc3\xa9", 7);
    bj_puts(&out, ",");
    bj_u64_out(&out, 18446744073709551615ull);
    CHECK(out.ptr && strcmp(out.ptr, "\"q\\\"\\\\\\n\\u0001\xc3\xa9\",18446744073709551615") == 0);
    CHECK(bj_valid(out.ptr, out.len - 21));
    bj_free(&out);

    while (ncopies)
        free(copies[--ncopies]);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    puts("braid_json: all checks passed");
    return 0;
}
