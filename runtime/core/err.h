/* SPDX-License-Identifier: MIT */
/*
 * Duet error codes.
 *
 * Every function that can fail returns int: 0 on success, or a negative code.
 * A negative code is either -errno (ENOMEM, EINVAL, EIO, ...) or -DUET_E*,
 * a project code from the list below.  Project codes start above every errno
 * value, so one int carries both kinds and duet_strerror() names either.
 */
#ifndef DUET_ERR_H
#define DUET_ERR_H

/*
 * X(NAME, "message"): one line per project code, in a stable order.  The
 * name is the stable upper-case word clients and statistics switch on.
 */
#define DUET_ERRORS(X)                                                       \
	X(TRUNCATED, "file truncated")                                       \
	X(BADMAGIC, "not a GGUF file (bad magic)")                           \
	X(VERSION, "unsupported GGUF version")                               \
	X(COUNT, "count out of range")                                       \
	X(STRING, "invalid string")                                          \
	X(KEY, "invalid or duplicate metadata key")                          \
	X(VALTYPE, "invalid metadata value type")                            \
	X(TENSORNAME, "invalid or duplicate tensor name")                    \
	X(TENSORTYPE, "unknown tensor type")                                 \
	X(SHAPE, "invalid tensor shape")                                     \
	X(SIZE, "tensor size overflow")                                      \
	X(OFFSET, "tensor offset misaligned or out of bounds")               \
	X(OVERLAP, "tensors overlap")                                        \
	X(ALIGN, "invalid alignment")                                        \
	X(ARCH, "unsupported model architecture or feature")                 \
	X(MODELKEY, "model metadata key missing or of the wrong type")       \
	X(HPARAM, "model hyperparameters out of range or inconsistent")      \
	X(MODELTENSOR, "model tensor missing or of the wrong shape or type") \
	X(CFGSYNTAX, "configuration syntax error")                           \
	X(CFGKEY, "unknown configuration key")                               \
	X(CFGTYPE, "configuration value of the wrong type")                  \
	X(CFGRANGE, "configuration value out of range")                      \
	X(CFGMISSING, "required configuration key missing")                  \
	X(CFGINVALID, "invalid configuration")

/* Project codes begin here; errno values on Linux stay far below it. */
#define DUET_E_BASE 4096

enum duet_err {
	DUET_E__FIRST = DUET_E_BASE - 1,
#define DUET_ERR_ENUM(name, msg) DUET_E##name,
	DUET_ERRORS(DUET_ERR_ENUM)
#undef DUET_ERR_ENUM
		DUET_E__END
};

/* Message for 0, -errno or -DUET_E*; never NULL, never freed. */
const char *duet_strerror(int err);

/* Stable upper-case name ("TRUNCATED", "ENOENT", "OK"); never NULL. */
const char *duet_errname(int err);

#endif /* DUET_ERR_H */
