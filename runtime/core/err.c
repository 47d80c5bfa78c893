// SPDX-License-Identifier: MIT
#include "runtime/core/err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const duet_err_msg[] = {
#define DUET_ERR_MSG(name, msg) [DUET_E##name - DUET_E_BASE] = msg,
	DUET_ERRORS(DUET_ERR_MSG)
#undef DUET_ERR_MSG
};

static const char *const duet_err_name[] = {
#define DUET_ERR_NAME(name, msg) [DUET_E##name - DUET_E_BASE] = #name,
	DUET_ERRORS(DUET_ERR_NAME)
#undef DUET_ERR_NAME
};

static int duet_err_is_project(int err)
{
	return err <= -DUET_E_BASE && err > -DUET_E__END;
}

const char *duet_strerror(int err)
{
	if (err == 0)
		return "success";
	if (duet_err_is_project(err))
		return duet_err_msg[-err - DUET_E_BASE];
	if (err < 0 && err > -DUET_E_BASE)
		return strerror(-err);
	return "unknown error";
}

const char *duet_errname(int err)
{
	if (err == 0)
		return "OK";
	if (duet_err_is_project(err))
		return duet_err_name[-err - DUET_E_BASE];
	if (err < 0 && err > -DUET_E_BASE) {
		const char *name = strerrorname_np(-err);
		if (name)
			return name;
	}
	return "EUNKNOWN";
}
