/* SPDX-License-Identifier: MIT */
/*
 * UTF-8 and code point classes; see unicode.h.
 */
#include "runtime/model/unicode.h"

size_t uni_seq_len(uint8_t b)
{
	if (b < 0xC2)
		return 1; /* ASCII, continuation bytes and overlong leads C0/C1 */
	if (b < 0xE0)
		return 2;
	if (b < 0xF0)
		return 3;
	if (b < 0xF5)
		return 4;
	return 1;
}

size_t uni_decode_strict(const uint8_t *s, size_t len, uint32_t *cp)
{
	uint8_t b = s[0];
	size_t n, i;
	uint32_t c;

	if (b < 0x80) {
		*cp = b;
		return 1;
	}
	n = uni_seq_len(b);
	if (n == 1 || n > len)
		return 0;
	c = b & (0x7F >> n);
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3F);
	}
	/* Overlong 3- and 4-byte forms, surrogates, beyond U+10FFFF (C0/C1 caught above). */
	if ((n == 3 && c < 0x800) || (n == 4 && c < 0x10000) || (c >= 0xD800 && c <= 0xDFFF) ||
	    c > UNI_MAX)
		return 0;
	*cp = c;
	return n;
}

size_t uni_decode(const uint8_t *s, size_t len, uint32_t *cp)
{
	size_t n = uni_decode_strict(s, len, cp);

	if (n)
		return n;
	*cp = UNI_REPLACEMENT;
	return 1;
}

size_t uni_encode(uint32_t cp, uint8_t out[4])
{
	if (cp > UNI_MAX || (cp >= 0xD800 && cp <= 0xDFFF))
		cp = UNI_REPLACEMENT;
	if (cp < 0x80) {
		out[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (uint8_t)(0xC0 | (cp >> 6));
		out[1] = (uint8_t)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (uint8_t)(0xE0 | (cp >> 12));
		out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (uint8_t)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (uint8_t)(0xF0 | (cp >> 18));
	out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (uint8_t)(0x80 | (cp & 0x3F));
	return 4;
}

enum uni_cat uni_category(uint32_t cp)
{
	unsigned lo = 0, hi = uni_n_ranges;

	if (cp > UNI_MAX)
		return UNI_UNDEF;
	/* ASCII fast path: the first ranges cover it, but avoid the search. */
	if (cp < 0x80) {
		if (cp < 0x20 || cp == 0x7F)
			return UNI_CONTROL;
		if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
			return UNI_LETTER;
		if (cp >= '0' && cp <= '9')
			return UNI_NUMBER;
		if (cp == ' ')
			return UNI_SEPARATOR;
		if (cp == '$' || cp == '+' || cp == '<' || cp == '=' || cp == '>' || cp == '^' ||
		    cp == '`' || cp == '|' || cp == '~')
			return UNI_SYMBOL;
		return UNI_PUNCT;
	}
	while (lo + 1 < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (uni_ranges[mid].first <= cp)
			lo = mid;
		else
			hi = mid;
	}
	return (enum uni_cat)uni_ranges[lo].cat;
}

bool uni_is_space(uint32_t cp)
{
	switch (cp) {
	case 0x09:
	case 0x0A:
	case 0x0B:
	case 0x0C:
	case 0x0D:
	case 0x20:
	case 0x85:
	case 0xA0:
	case 0x1680:
	case 0x2028:
	case 0x2029:
	case 0x202F:
	case 0x205F:
	case 0x3000:
		return true;
	default:
		return cp >= 0x2000 && cp <= 0x200A;
	}
}

uint32_t uni_ascii_lower(uint32_t cp)
{
	return (cp >= 'A' && cp <= 'Z') ? cp + 0x20 : cp;
}
