/* braid_json: see braid_json.h. */
#include "braid_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool skip_value(cursor *c, int depth);

static bool skip_string(cursor *c) {
    if (c->p >= c->end || *c->p != '"')
        return false;
    c->p++;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p++;
        if (ch == '"')
            return true;
        if (ch < 0x20)
            return false;
        if (ch == '\\') {
            if (c->p >= c->end)
                return false;
            char e = *c->p++;
            if (e == 'u') {
                for (int i = 0; i < 4; i++, c->p++)
                    if (c->p >= c->end || !strchr("0123456789abcdefABCDEF", *c->p) || !*c->p)
                        return false;
            } else if (!strchr("\"\\/bfnrt", e) || !e) {
                return false;
            }
        }
    }
    return false;
}

static bool skip_digits(cursor *c) {
    const char *start = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
        c->p++;
    return c->p > start;
}

static bool skip_number(cursor *c) {
    if (c->p < c->end && *c->p == '-')
        c->p++;
    if (c->p < c->end && *c->p == '0')
        c->p++;
    else if (!skip_digits(c))
        return false;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (!skip_digits(c))
            return false;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (!skip_digits(c))
            return false;
    }
    return true;
}

static bool skip_literal(cursor *c, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return false;
    c->p += n;
    return true;
}

/* Skips `[...]` or `{...}`; `close` is the closing bracket. */
static bool skip_container(cursor *c, char close, int depth) {
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return true;
    }
    for (;;) {
        if (close == '}') {
            skip_ws(c);
            if (!skip_string(c))
                return false;
            skip_ws(c);
            if (c->p >= c->end || *c->p != ':')
                return false;
            c->p++;
        }
        if (!skip_value(c, depth + 1))
            return false;
        skip_ws(c);
        if (c->p >= c->end)
            return false;
        if (*c->p == close) {
            c->p++;
            return true;
        }
        if (*c->p != ',')
            return false;
        c->p++;
    }
}

/* Skips one value and the whitespace before it. */
static bool skip_value(cursor *c, int depth) {
    if (depth > BJ_MAX_DEPTH)
        return false;
    skip_ws(c);
    if (c->p >= c->end)
        return false;
    switch (*c->p) {
    case '"':
        return skip_string(c);
    case '{':
        return skip_container(c, '}', depth);
    case '[':
        return skip_container(c, ']', depth);
    case 't':
        return skip_literal(c, "true");
    case 'f':
        return skip_literal(c, "false");
    case 'n':
        return skip_literal(c, "null");
    default:
        return skip_number(c);
    }
}

bool bj_valid(const char *text, size_t len) {
    cursor c = {text, text + len};
    if (!skip_value(&c, 0))
        return false;
    skip_ws(&c);
    return c.p == c.end;
}

bool bj_member(const char *text, size_t len, const char *key, bj_span *out) {
    if (!bj_valid(text, len))
        return false;
    cursor c = {text, text + len};
    skip_ws(&c);
    if (*c.p != '{')
        return false;
    c.p++;
    size_t key_len = strlen(key);
    for (;;) {
        skip_ws(&c);
        if (*c.p == '}')
            return false;
        const char *name = c.p;
        skip_string(&c);
        /* The key as written; a key with escapes never matches (keys braid
         * passes are plain). */
        bool match = (size_t)(c.p - name) == key_len + 2 && memcmp(name + 1, key, key_len) == 0;
        skip_ws(&c);
        c.p++; /* ':' */
        skip_ws(&c);
        const char *value = c.p;
        skip_value(&c, 1);
        if (match) {
            out->ptr = value;
            out->len = (size_t)(c.p - value);
            return true;
        }
        skip_ws(&c);
        if (*c.p == '}')
            return false;
        c.p++; /* ',' */
    }
}

static int hex(char ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return ch - 'A' + 10;
}

static unsigned read_hex4(const char *p) {
    return (unsigned)(hex(p[0]) << 12 | hex(p[1]) << 8 | hex(p[2]) << 4 | hex(p[3]));
}

static size_t put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

char *bj_string(bj_span value) {
    cursor c = {value.ptr, value.ptr + value.len};
    if (!skip_string(&c) || c.p != c.end)
        return NULL;
    /* Unescaping never makes the text longer. */
    char *out = malloc(value.len);
    if (!out)
        return NULL;
    size_t n = 0;
    const char *p = value.ptr + 1, *end = value.ptr + value.len - 1;
    while (p < end) {
        if (*p != '\\') {
            out[n++] = *p++;
            continue;
        }
        p++;
        char e = *p++;
        switch (e) {
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned cp = read_hex4(p);
            p += 4;
            /* A surrogate pair is one code point; a lone surrogate is U+FFFD. */
            if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                unsigned low = read_hex4(p + 2);
                if (low >= 0xDC00 && low < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    p += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000)
                cp = 0xFFFD;
            if (cp == 0) {
                free(out);
                return NULL;
            }
            n += put_utf8(out + n, cp);
            break;
        }
        default: out[n++] = e; break; /* \" \\ \/ */
        }
    }
    out[n] = '\0';
    return out;
}

bool bj_u64(bj_span value, uint64_t *out) {
    uint64_t n = 0;
    if (value.len == 0 || value.len > 20)
        return false;
    for (size_t i = 0; i < value.len; i++) {
        char ch = value.ptr[i];
        if (ch < '0' || ch > '9' || (i == 0 && ch == '0' && value.len > 1))
            return false;
        uint64_t next = n * 10 + (uint64_t)(ch - '0');
        if (next / 10 != n)
            return false;
        n = next;
    }
    *out = n;
    return true;
}

void bj_raw(bj_buf *b, const char *text, size_t len) {
    if (b->failed)
        return;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *grown = realloc(b->ptr, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->ptr = grown;
        b->cap = cap;
    }
    memcpy(b->ptr + b->len, text, len);
    b->len += len;
    b->ptr[b->len] = '\0';
}

void bj_puts(bj_buf *b, const char *text) { bj_raw(b, text, strlen(text)); }

void bj_string_out(bj_buf *b, const char *text, size_t len) {
    bj_raw(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        bj_raw(b, text + run, i - run);
        run = i + 1;
        char esc[8];
        switch (ch) {
        case '"': bj_raw(b, "\\\"", 2); break;
        case '\\': bj_raw(b, "\\\\", 2); break;
        case '\n': bj_raw(b, "\\n", 2); break;
        case '\r': bj_raw(b, "\\r", 2); break;
        case '\t': bj_raw(b, "\\t", 2); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", ch);
            bj_raw(b, esc, 6);
        }
    }
    bj_raw(b, text + run, len - run);
    bj_raw(b, "\"", 1);
}

void bj_u64_out(bj_buf *b, uint64_t n) {
    char digits[24];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)n);
    bj_raw(b, digits, (size_t)len);
}

void bj_free(bj_buf *b) {
    free(b->ptr);
    *b = (bj_buf){0};
}
