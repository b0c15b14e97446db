/* braid_text: printf-style formatting into a braid string, for what a step
 * or policy hands back (a result, a step error's message, a reason). The
 * string is malloc'd, as the bindings expect: they free it after the call.
 * Out of memory, it is empty ({NULL, 0}).
 */
#ifndef BRAID_TEXT_H
#define BRAID_TEXT_H

#include "braid.h"

#include <stdarg.h>

braid_string_t braid_text(const char *format, ...) __attribute__((format(printf, 1, 2)));
braid_string_t braid_vtext(const char *format, va_list args) __attribute__((format(printf, 1, 0)));

#endif
