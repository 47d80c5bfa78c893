/* SPDX-License-Identifier: MIT */
/* Shared between the two files of the config module; not for other modules. */
#ifndef DUET_CONFIG_IMPL_H
#define DUET_CONFIG_IMPL_H

#include <libconfig.h>

#include "runtime/config/config.h"

/*
 * Internal to runtime/config: config.c parses the text, schema.c validates
 * the tree against the schema and fills *out.  Not for other modules.
 */
int cfg__apply(config_setting_t *root, const char *name, const char *base_dir,
	       struct duet_config *out, struct cfg_errors *errs);

#endif /* DUET_CONFIG_IMPL_H */
