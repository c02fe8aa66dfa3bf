/*
 * pools.c: see pools.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "pools.h"

static void
fail(const char *what, const char *detail)
{
    fprintf(stderr, "%s: FAILED: %s%s: %s\n", program_invocation_short_name, what, detail,
            walredo_last_error());
    exit(1);
}

void
set_test_server(walredo_config *cfg)
{
    const char *version = getenv("WALREDO_PG_VERSION");
    const char *bindir = getenv("WALREDO_PG_BINDIR");
    char debian[64];

    if (version == NULL || version[0] == '\0')
        version = "15";
    if (bindir == NULL || bindir[0] == '\0')
    {
        snprintf(debian, sizeof debian, "/usr/lib/postgresql/%s/bin", version);
        bindir = debian;
    }
    if (walredo_config_set(cfg, "pg_version", version) != WALREDO_OK)
        fail("config ", "pg_version");
    if (walredo_config_set(cfg, "pg_bindir", bindir) != WALREDO_OK)
        fail("config ", "pg_bindir");
}

walredo_pool *
make_test_pool(const char *extension, ...)
{
    walredo_config *cfg = walredo_config_new();
    walredo_pool *pool = NULL;
    const char *key;
    va_list settings;

    if (cfg == NULL)
        fail("walredo_config_new", "");
    if (walredo_config_set(cfg, "extension_path", extension) != WALREDO_OK)
        fail("config ", "extension_path");
    set_test_server(cfg);
    va_start(settings, extension);
    while ((key = va_arg(settings, const char *)) != NULL)
    {
        const char *value = va_arg(settings, const char *);

        if (walredo_config_set(cfg, key, value) != WALREDO_OK)
            fail("config ", key);
    }
    va_end(settings);
    if (walredo_pool_new(cfg, &pool) != WALREDO_OK)
        fail("walredo_pool_new", "");
    walredo_config_free(cfg);
    return pool;
}
