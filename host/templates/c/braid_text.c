/* braid_text: see braid_text.h. */
#include "braid_text.h"

#include <stdio.h>
#include <stdlib.h>

braid_string_t braid_vtext(const char *format, va_list args) {
    va_list again;
    va_copy(again, args);
    int len = vsnprintf(NULL, 0, format, args);
    char *bytes = len < 0 ? NULL : malloc((size_t)len + 1);
    if (bytes)
        vsnprintf(bytes, (size_t)len + 1, format, again);
    va_end(again);
    return bytes ? (braid_string_t){(uint8_t *)bytes, (size_t)len} : (braid_string_t){NULL, 0};
}

braid_string_t braid_text(const char *format, ...) {
    va_list args;
    va_start(args, format);
    braid_string_t text = braid_vtext(format, args);
    va_end(args);
    return text;
}
