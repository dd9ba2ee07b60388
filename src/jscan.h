/* jscan: a validating JSON pull scanner over a byte buffer, plain C, no Lua, no allocation.
 *
 * The stream assembler walks the few objects it cares about (jscan_enter, jscan_next_key,
 * jscan_next_elem) and hands every other value to jscan_value, which skips it while still
 * validating it completely. Strings are never decoded while scanning: a jspan records the raw
 * bytes between the quotes and whether they hold an escape; jscan_unescape decodes later,
 * only the strings that are used.
 *
 * Acceptance is meant to equal lua-cjson's strict decoder (decode_invalid_numbers(false),
 * decode_max_depth 1000) on every input, except where cjson accepts what RFC 8259 forbids:
 *
 *   D1  Numbers follow the RFC grammar. cjson hands the text to strtod, so it also accepts a
 *       fraction with no digits after the point ("1.", "0.e5", "[1.]") and a minus sign with
 *       no integer part ("-.5", "-0."). We reject these.
 *   D2  cjson reads its input as a NUL-terminated C string, so a NUL byte after a complete
 *       value ends the document early: "{}\0garbage" is accepted. We use the length and
 *       reject the NUL as trailing garbage.
 *
 * Where the RFC is stricter than cjson but the brief says "do what cjson does", we follow cjson:
 *   - raw control characters 0x01..0x1F inside strings are accepted and kept as they are
 *     (RFC 8259 requires them escaped); a raw NUL inside a string is rejected, as in cjson;
 *   - bytes >= 0x80 are not checked for valid UTF-8 and pass through untouched;
 *   - any value is accepted at the top level ("1", "\"x\"", "null").
 * Escapes: \" \\ \/ \b \f \n \r \t \uXXXX (hex either case). A \u high surrogate must be
 * followed by a \u low surrogate and the pair becomes one 4-byte UTF-8 sequence; a lone or
 * reversed surrogate is an error; \u0000 decodes to a NUL byte. Whitespace: space, tab, CR, LF.
 * Nesting: at most JSCAN_MAX_DEPTH objects/arrays deep (the outermost counts as 1).
 */
#ifndef LLMCHAT_JSCAN_H
#define LLMCHAT_JSCAN_H

#include <stddef.h>
#include <stdint.h>

#define JSCAN_MAX_DEPTH 1000

enum {
  JSCAN_NONE = 0, /* absent: the key did not occur */
  JSCAN_NULL, JSCAN_FALSE, JSCAN_TRUE, JSCAN_NUMBER, JSCAN_STRING, JSCAN_ARRAY, JSCAN_OBJECT
};

/* A scanned value. Strings: p/n are the bytes between the quotes, escapes undecoded, esc is
 * nonzero when a backslash occurs. Every other type: p/n are the value's raw JSON text. */
typedef struct jspan {
  const char *p;
  size_t n;
  unsigned char type;
  unsigned char esc;
} jspan;

typedef struct jscan {
  const char *p;     /* next unread byte */
  const char *end;
  const char *base;  /* start of the document, for error offsets */
  int depth;         /* objects/arrays currently open */
  const char *err;   /* static message, NULL while no error */
  size_t errpos;     /* byte offset (0-based) where the error was found */
  /* open container kinds by depth, one bit each (1 = object): lets jscan_value skip any
   * nesting without recursion */
  uint64_t kinds[(JSCAN_MAX_DEPTH + 64) / 64];
  /* Optional (NULL after jscan_init): every string *value* scanned (not object keys) is
   * appended to rec while nrec < caprec; nrec counts them all, so nrec > caprec means
   * some were not recorded. The stream assembler's chunk template uses it. */
  jspan *rec;
  size_t nrec, caprec;
} jscan;

void jscan_init(jscan *s, const char *buf, size_t len);

/* Skips whitespace; returns the next byte (0..255) without consuming it, or -1 at the end. */
static inline int jscan_peek(jscan *s) {
  const char *p = s->p, *e = s->end;
  while (p < e) {
    unsigned char c = (unsigned char)*p;
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') { s->p = p; return c; }
    p++;
  }
  s->p = p;
  return -1;
}

/* Every function below returns 0 on success and -1 on a syntax error (s->err, s->errpos set),
 * except the iterators, which return 1 (another item), 0 (container closed) or -1. */

/* Scans and validates one value of any type after optional whitespace; fills *v. */
int jscan_value(jscan *s, jspan *v);

/* A string value with s->p at its opening quote (no whitespace skipped, not recorded). */
int jscan_string(jscan *s, jspan *v);

/* Consumes an opening '{' or '[' (whitespace already skipped, the byte is `open`),
 * counting it against the depth limit. */
int jscan_enter(jscan *s, int open);

/* Object members. *first must be 1 before the first call. On 1, *key is the member name
 * and the scanner stands before its value, which the caller must consume (jscan_value or a
 * nested walk). On 0 the closing '}' has been consumed. */
int jscan_next_key(jscan *s, jspan *key, int *first);

/* Array elements. On 1 the scanner stands at the element (whitespace skipped), which the
 * caller must consume. On 0 the closing ']' has been consumed. */
int jscan_next_elem(jscan *s, int *first);

/* After the top-level value: only whitespace may remain. */
int jscan_finish(jscan *s);

/* Decodes the bytes of a string jspan that jscan validated into out, which must have room
 * for n bytes (decoding never grows a string). Returns the decoded length. */
size_t jscan_unescape(const char *p, size_t n, char *out);

/* The value of a validated number as the C library's strtod sees it in the "C" locale
 * (what lua-cjson's decoder produces). tmp must hold at least n + 1 bytes when n >= 64;
 * shorter numbers use a stack buffer and tmp may be NULL. */
double jscan_number(const char *p, size_t n, char *tmp);

#endif
