// SPDX-License-Identifier: MIT
/*
 * Configuration loading: reading the file, libconfig parsing, the lexical
 * checks libconfig does not make, the error list, and the parsers for CPU
 * lists and device names.  Validation against the schema is in schema.c.
 */
#include "runtime/config/config-impl.h"
#include "runtime/core/err.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void cfg_errors_init(struct cfg_errors *errs)
{
	errs->count = 0;
	errs->dropped = 0;
	errs->first = 0;
}

void cfg_errors_add(struct cfg_errors *errs, int code, const char *fmt, ...)
{
	va_list ap;

	if (!errs->first)
		errs->first = code;
	if (errs->count >= CFG_MAX_ERRORS) {
		errs->dropped++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(errs->msg[errs->count], CFG_ERROR_LEN, fmt, ap);
	va_end(ap);
	errs->count++;
}

void cfg_errors_print(FILE *fp, const struct cfg_errors *errs)
{
	for (unsigned i = 0; i < errs->count; i++)
		fprintf(fp, "%s\n", errs->msg[i]);
	if (errs->dropped)
		fprintf(fp, "(%u more errors)\n", errs->dropped);
}

/* Line (1-based) of text[off]. */
static unsigned line_at(const char *text, size_t off)
{
	unsigned line = 1;

	for (size_t i = 0; i < off; i++)
		line += text[i] == '\n';
	return line;
}

static bool is_name_char(int c)
{
	return isalnum(c) || c == '-' || c == '_' || c == '*';
}

/*
 * Accumulate one digit in the given base; false once the value no longer
 * fits in 64 bits (the value then stays saturated).
 */
static bool acc_digit(uint64_t *v, unsigned base, unsigned d, bool ok)
{
	if (!ok || *v > (UINT64_MAX - d) / base) {
		*v = UINT64_MAX;
		return false;
	}
	*v = *v * base + d;
	return true;
}

static unsigned hex_value(int c)
{
	return isdigit(c) ? (unsigned)(c - '0') : (unsigned)(tolower(c) - 'a' + 10);
}

/* [eE][-+]?[0-9]+ at p: its length, or 0. */
static size_t exponent_len(const char *p)
{
	size_t n = 1;

	if (*p != 'e' && *p != 'E')
		return 0;
	if (p[n] == '-' || p[n] == '+')
		n++;
	if (!isdigit((unsigned char)p[n]))
		return 0;
	while (isdigit((unsigned char)p[n]))
		n++;
	return n;
}

/*
 * The number token at p, by libconfig's rules (longest match): floats
 * [-+]?[0-9]*\.[0-9]*(exponent)? and [-+]?[0-9]+(\.[0-9]*)?exponent, integers
 * [-+]?[0-9]+ with an optional L or LL, hex 0[xX][0-9a-fA-F]+ with an
 * optional L or LL.  Returns the end of the token (p itself when there is
 * none).  For an integer, *bad tells whether it does not fit its type (32
 * bits, 64 with L) and *bits which that is.
 */
static const char *scan_number(const char *p, bool *bad, int *bits)
{
	const char *start = p, *digits;
	bool neg = *p == '-', ok = true, hex = false;
	uint64_t v = 0, limit;
	unsigned longs = 0;

	*bad = false;
	*bits = 32;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X') && isxdigit((unsigned char)p[2])) {
		hex = true;
		for (p += 2; isxdigit((unsigned char)*p); p++)
			ok = acc_digit(&v, 16, hex_value((unsigned char)*p), ok);
	} else {
		if (*p == '-' || *p == '+')
			p++;
		digits = p;
		for (; isdigit((unsigned char)*p); p++)
			ok = acc_digit(&v, 10, (unsigned)(*p - '0'), ok);
		if (*p == '.') {
			for (p++; isdigit((unsigned char)*p); p++)
				;
			return p + exponent_len(p);
		}
		if (p == digits)
			return start; /* a sign alone */
		if (exponent_len(p))
			return p + exponent_len(p);
	}
	while (*p == 'L' && longs < 2) {
		longs++;
		p++;
	}
	if (hex)
		limit = longs ? INT64_MAX : INT32_MAX;
	else if (longs)
		limit = neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX;
	else
		limit = neg ? (uint64_t)INT32_MAX + 1 : INT32_MAX;
	*bad = !ok || v > limit;
	*bits = longs ? 64 : 32;
	return p;
}

/*
 * Tokens of libconfig's lexical grammar, as far as the checks below need
 * them: comments and whitespace are skipped, strings run to the closing
 * quote (a backslash always takes the next byte with it, as in libconfig's
 * scanner), punctuation is one byte, and anything libconfig has no token for
 * is CTOK_OTHER (where its parser stops with a syntax error).
 */
enum ctok_kind {
	CTOK_END,
	CTOK_STRING,
	CTOK_PUNCT, /* one of = : ; , { } ( ) [ ] */
	CTOK_NUMBER,
	CTOK_NAME,
	CTOK_AT,
	CTOK_OTHER,
};

struct ctok {
	enum ctok_kind kind;
	const char *start, *end;
	unsigned line; /* of the first byte */
};

/* A '.' alone is a float to libconfig; a sign needs a digit or '.' after it. */
static bool starts_number(const char *p)
{
	return isdigit((unsigned char)p[0]) || p[0] == '.' ||
	       ((p[0] == '-' || p[0] == '+') && (isdigit((unsigned char)p[1]) || p[1] == '.'));
}

/* The token at *pp, advancing *pp past it and *line past its newlines. */
static void next_token(const char **pp, unsigned *line, struct ctok *t)
{
	const char *p = *pp;
	bool bad;
	int bits;

	for (;;) {
		if (*p == '\n') {
			(*line)++;
			p++;
		} else if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\f') {
			p++; /* libconfig's whitespace; \v is garbage to it */
		} else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
			while (*p && *p != '\n')
				p++;
		} else if (p[0] == '/' && p[1] == '*') {
			for (p += 2; *p && !(p[0] == '*' && p[1] == '/'); p++)
				*line += *p == '\n';
			p += *p ? 2 : 0;
		} else {
			break;
		}
	}
	t->start = p;
	t->line = *line;
	if (!*p) {
		t->kind = CTOK_END;
	} else if (*p == '"') {
		t->kind = CTOK_STRING;
		for (p++; *p && *p != '"'; p++) {
			if (*p == '\\' && p[1])
				p++;
			*line += *p == '\n';
		}
		p += *p ? 1 : 0;
	} else if (strchr("=:;,{}()[]", *p)) {
		t->kind = CTOK_PUNCT;
		p++;
	} else if (*p == '@') {
		t->kind = CTOK_AT;
		p++;
	} else if (isalpha((unsigned char)*p) || *p == '*') {
		t->kind = CTOK_NAME;
		while (is_name_char((unsigned char)*p))
			p++;
	} else if (starts_number(p)) {
		t->kind = CTOK_NUMBER;
		p = scan_number(p, &bad, &bits);
		if (p == t->start) {
			t->kind = CTOK_OTHER;
			p++;
		}
	} else {
		t->kind = CTOK_OTHER;
		p++;
	}
	t->end = p;
	*pp = p;
}

#define CFG_MAX_NESTING 32 /* the schema needs 3 */

/*
 * Checks made before libconfig sees the text.  Returns 0, or -DUET_ECFGSYNTAX
 * with the offset and line of the offending token and what is wrong:
 *
 * - libconfig opens the file an @include directive names, from any
 *   directory; a config must not make the daemon (or a fuzzer) read arbitrary
 *   files, so the directive is refused outside comments and strings, in any
 *   letter case.
 * - libconfig 1.5 leaks the string of a string token that arrives where its
 *   grammar takes none ("a = 1 \"x\";").  A string is a value, so after a
 *   valid prefix it may follow only '=', ':', '(', '[', a ',' inside a list or
 *   array, or another string (concatenation); this scan refuses any other.
 *   It also refuses unbalanced brackets and nesting deeper than
 *   CFG_MAX_NESTING.  Where the prefix is already invalid libconfig stops
 *   there first, so the text libconfig does parse never leaks.
 */
static int prescan(const char *text, size_t *off, unsigned *line_out, const char **why)
{
	char stack[CFG_MAX_NESTING];
	const char *p = text;
	unsigned line = 1, depth = 0;
	struct ctok t, prev = { .kind = CTOK_END };
	bool grammar = true; /* the structure checks apply: no CTOK_OTHER seen */

	for (;; prev = t) {
		next_token(&p, &line, &t);
		*off = (size_t)(t.start - text);
		*line_out = t.line;
		switch (t.kind) {
		case CTOK_END:
			return 0;
		case CTOK_AT:
			if (strncasecmp(t.start, "@include", 8) == 0) {
				*why = "@include is not supported";
				return -DUET_ECFGSYNTAX;
			}
			grammar = false;
			break;
		case CTOK_OTHER:
			grammar = false;
			break;
		case CTOK_STRING: {
			char c = prev.kind == CTOK_PUNCT ? prev.start[0] : '\0';
			char top = depth ? stack[depth - 1] : '{';

			if (grammar && prev.kind != CTOK_STRING && c != '=' && c != ':' &&
			    c != '(' && c != '[' && !(c == ',' && top != '{')) {
				*why = "syntax error (unexpected string)";
				return -DUET_ECFGSYNTAX;
			}
			break;
		}
		case CTOK_PUNCT: {
			char c = t.start[0];

			if (!grammar)
				break;
			if (c == '{' || c == '(' || c == '[') {
				if (depth == CFG_MAX_NESTING) {
					*why = "groups, lists and arrays nested too deeply";
					return -DUET_ECFGSYNTAX;
				}
				stack[depth++] = c;
			} else if (c == '}' || c == ')' || c == ']') {
				char open = c == '}' ? '{' : c == ')' ? '(' : '[';

				if (!depth || stack[depth - 1] != open) {
					*why = c == '}'	  ? "syntax error (unbalanced '}')"
					       : c == ')' ? "syntax error (unbalanced ')')"
							  : "syntax error (unbalanced ']')";
					return -DUET_ECFGSYNTAX;
				}
				depth--;
			}
			break;
		}
		case CTOK_NUMBER:
		case CTOK_NAME:
			break;
		}
	}
}

/*
 * libconfig 1.5 silently wraps integer literals that do not fit their type
 * (3000000000 reads as -1294967296, 4294967552 as 256), so a value could pass
 * validation as something the operator never wrote.  After a successful
 * parse (every token well formed), this adds one error for each integer
 * literal outside 32 bits, or outside 64 bits with the L suffix.  Returns 0
 * or -DUET_ECFGRANGE.
 */
static int check_integers(const char *text, const char *name, struct cfg_errors *errs)
{
	const char *p = text;
	unsigned line = 1;
	struct ctok t;
	int rc = 0;

	for (next_token(&p, &line, &t); t.kind != CTOK_END; next_token(&p, &line, &t)) {
		long n = t.end - t.start;
		bool bad;
		int bits = 32;

		if (t.kind != CTOK_NUMBER)
			continue;
		scan_number(t.start, &bad, &bits);
		if (bad) {
			cfg_errors_add(errs, -DUET_ECFGRANGE,
				       "%s:%u: integer %.*s%s does not fit in %d bits", name,
				       t.line, (int)(n > 40 ? 40 : n), t.start, n > 40 ? "..." : "",
				       bits);
			rc = -DUET_ECFGRANGE;
		}
	}
	return rc;
}

/*
 * Report what prescan() found at text[off], unless libconfig finds an
 * earlier syntax error in the text before it (then that one is the first).
 */
static void prescan_error(const char *text, size_t off, unsigned line, const char *why,
			  const char *name, struct cfg_errors *errs)
{
	char *prefix = malloc(off + 2);
	config_t cf;

	if (prefix) {
		memcpy(prefix, text, off);
		prefix[off] = '\n';
		prefix[off + 1] = '\0';
		config_init(&cf);
		if (!config_read_string(&cf, prefix) && config_error_line(&cf) > 0 &&
		    (unsigned)config_error_line(&cf) < line) {
			cfg_errors_add(
				errs, -DUET_ECFGSYNTAX, "%s:%d: %s", name, config_error_line(&cf),
				config_error_text(&cf) ? config_error_text(&cf) : "syntax error");
			config_destroy(&cf);
			free(prefix);
			return;
		}
		config_destroy(&cf);
		free(prefix);
	}
	cfg_errors_add(errs, -DUET_ECFGSYNTAX, "%s:%u: %s", name, line, why);
}

int cfg_load_string(const char *text, const char *name, const char *base_dir,
		    struct duet_config *out, struct cfg_errors *errs)
{
	struct cfg_errors local;
	const char *why = NULL;
	char *copy = NULL;
	unsigned line;
	size_t len, off;
	config_t cf;

	if (!errs)
		errs = &local;
	cfg_errors_init(errs);
	cfg_defaults(out);
	if (!name)
		name = "(config)";
	if (!text) {
		cfg_errors_add(errs, -EINVAL, "%s: no text", name);
		return -EINVAL;
	}
	if (prescan(text, &off, &line, &why) < 0) {
		prescan_error(text, off, line, why, name, errs);
		return errs->first;
	}
	/* libconfig 1.5 takes a '#' or '//' comment on the last line for a syntax error. */
	len = strlen(text);
	if (len && text[len - 1] != '\n') {
		copy = malloc(len + 2);
		if (!copy) {
			cfg_errors_add(errs, -ENOMEM, "%s: %s", name, strerror(ENOMEM));
			return -ENOMEM;
		}
		memcpy(copy, text, len);
		copy[len] = '\n';
		copy[len + 1] = '\0';
		text = copy;
	}

	config_init(&cf);
	if (!config_read_string(&cf, text)) {
		why = config_error_text(&cf);
		cfg_errors_add(errs, -DUET_ECFGSYNTAX, "%s:%d: %s", name, config_error_line(&cf),
			       why ? why : "syntax error");
		goto out_destroy;
	}
	if (check_integers(text, name, errs) < 0)
		goto out_destroy;
	cfg__apply(config_root_setting(&cf), name, base_dir, out, errs);
out_destroy:
	config_destroy(&cf);
	free(copy);
	return errs->first;
}

/* The whole of a file of at most CFG_MAX_FILE_BYTES, NUL-terminated, into *text. */
static int read_text(const char *path, char **text, size_t *len, struct cfg_errors *errs)
{
	size_t cap = 4096, n = 0;
	struct stat st;
	char *buf = NULL;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		cfg_errors_add(errs, rc, "%s: cannot open: %s", path, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		rc = -EISDIR;
		cfg_errors_add(errs, rc, "%s: cannot read: %s", path, strerror(-rc));
		goto out_close;
	}
	buf = malloc(cap);
	if (!buf) {
		rc = -ENOMEM;
		cfg_errors_add(errs, rc, "%s: cannot read: %s", path, strerror(-rc));
		goto out_close;
	}
	for (;;) {
		ssize_t got;

		if (n + 1 >= cap) {
			char *bigger;

			if (cap > CFG_MAX_FILE_BYTES) {
				rc = -EFBIG;
				cfg_errors_add(errs, rc, "%s: file too large (more than %u bytes)",
					       path, CFG_MAX_FILE_BYTES);
				goto out_free;
			}
			bigger = realloc(buf, cap * 2);
			if (!bigger) {
				rc = -ENOMEM;
				cfg_errors_add(errs, rc, "%s: cannot read: %s", path,
					       strerror(-rc));
				goto out_free;
			}
			buf = bigger;
			cap *= 2;
		}
		got = read(fd, buf + n, cap - 1 - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			rc = -errno;
			cfg_errors_add(errs, rc, "%s: cannot read: %s", path, strerror(-rc));
			goto out_free;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	if (n > CFG_MAX_FILE_BYTES) {
		rc = -EFBIG;
		cfg_errors_add(errs, rc, "%s: file too large (more than %u bytes)", path,
			       CFG_MAX_FILE_BYTES);
		goto out_free;
	}
	buf[n] = '\0';
	*text = buf;
	*len = n;
	close(fd);
	return 0;

out_free:
	free(buf);
out_close:
	close(fd);
	return rc;
}

int cfg_load_file(const char *path, struct duet_config *out, struct cfg_errors *errs)
{
	struct cfg_errors local;
	char *text = NULL, *copy = NULL, *nul;
	char base[PATH_MAX];
	const char *dir;
	size_t len = 0;
	int rc;

	if (!errs)
		errs = &local;
	cfg_errors_init(errs);
	cfg_defaults(out);
	rc = read_text(path, &text, &len, errs);
	if (rc < 0)
		return rc;
	/* libconfig would stop at a NUL and ignore the rest silently. */
	nul = memchr(text, '\0', len);
	if (nul) {
		rc = -DUET_ECFGSYNTAX;
		cfg_errors_add(errs, rc, "%s:%u: NUL byte in file", path,
			       line_at(text, (size_t)(nul - text)));
		goto out_free;
	}
	copy = strdup(path);
	if (!copy) {
		rc = -ENOMEM;
		cfg_errors_add(errs, rc, "%s: %s", path, strerror(ENOMEM));
		goto out_free;
	}
	/* Absolute, so that resolved paths survive a later chdir(). */
	dir = dirname(copy);
	if (realpath(dir, base))
		dir = base;
	rc = cfg_load_string(text, path, dir, out, errs);
	free(copy);
out_free:
	free(text);
	return rc;
}

/*
 * One CPU number at *pp, advancing it.  s is the whole list, for offsets in
 * messages.
 */
static int parse_cpu(const char **pp, const char *s, unsigned *cpu, char *why, size_t whylen)
{
	const char *p = *pp;
	unsigned v = 0;

	if (!isdigit((unsigned char)*p)) {
		if (*p == ',' || *p == '\0' || *p == '-')
			snprintf(why, whylen, "empty entry at offset %td", p - s);
		else
			snprintf(why, whylen, "expected a CPU number at offset %td", p - s);
		return -DUET_ECFGINVALID;
	}
	/* v stays below 10 * CFG_MAX_CPUS + 10 however many digits follow. */
	for (; isdigit((unsigned char)*p); p++)
		if (v < CFG_MAX_CPUS)
			v = v * 10 + (unsigned)(*p - '0');
	if (v >= CFG_MAX_CPUS) {
		snprintf(why, whylen, "CPU %.*s%s out of range [0, %d]",
			 (int)(p - *pp > 12 ? 12 : p - *pp), *pp, p - *pp > 12 ? "..." : "",
			 CFG_MAX_CPUS - 1);
		return -DUET_ECFGINVALID;
	}
	*pp = p;
	*cpu = v;
	return 0;
}

int cfg_cpulist_parse(const char *s, struct cfg_cpuset *set, unsigned *count, char *why,
		      size_t whylen)
{
	const char *p = s;
	unsigned n = 0;
	int rc;

	memset(set, 0, sizeof(*set));
	if (count)
		*count = 0;
	while (*p) {
		unsigned lo, hi;

		rc = parse_cpu(&p, s, &lo, why, whylen);
		if (rc < 0)
			return rc;
		hi = lo;
		if (*p == '-') {
			p++;
			rc = parse_cpu(&p, s, &hi, why, whylen);
			if (rc < 0)
				return rc;
			if (hi < lo) {
				snprintf(why, whylen, "reversed range %u-%u", lo, hi);
				return -DUET_ECFGINVALID;
			}
		}
		for (unsigned c = lo; c <= hi; c++)
			set->bits[c / 64] |= UINT64_C(1) << (c % 64);
		if (*p == ',') {
			p++;
			if (*p == '\0') {
				snprintf(why, whylen, "empty entry at offset %td", p - s);
				return -DUET_ECFGINVALID;
			}
		} else if (*p) {
			if (isgraph((unsigned char)*p))
				snprintf(why, whylen, "unexpected '%c' at offset %td", *p, p - s);
			else
				snprintf(why, whylen, "unexpected byte 0x%02x at offset %td",
					 (unsigned char)*p, p - s);
			return -DUET_ECFGINVALID;
		}
	}
	for (unsigned i = 0; i < CFG_MAX_CPUS / 64; i++)
		n += (unsigned)__builtin_popcountll(set->bits[i]);
	if (count)
		*count = n;
	return 0;
}

bool cfg_cpuset_has(const struct cfg_cpuset *set, unsigned cpu)
{
	return cpu < CFG_MAX_CPUS && (set->bits[cpu / 64] >> (cpu % 64)) & 1;
}

int cfg_device_parse(const char *s, enum cfg_device_kind *kind, int *index)
{
	const char *p;
	int v = 0;

	if (strcmp(s, "cpu") == 0) {
		*kind = CFG_DEVICE_CPU;
		*index = 0;
		return 0;
	}
	if (strncmp(s, "cuda:", 5) != 0)
		return -DUET_ECFGINVALID;
	p = s + 5;
	/* One or two decimal digits, no leading zero: "cuda:0" .. "cuda:63". */
	if (!isdigit((unsigned char)p[0]) || (p[0] == '0' && p[1] != '\0'))
		return -DUET_ECFGINVALID;
	for (int i = 0; p[i]; i++) {
		if (i >= 2 || !isdigit((unsigned char)p[i]))
			return -DUET_ECFGINVALID;
		v = v * 10 + (p[i] - '0');
	}
	if (v > 63)
		return -DUET_ECFGINVALID;
	*kind = CFG_DEVICE_CUDA;
	*index = v;
	return 0;
}
