/*
 * pools.h: how the C tests make a pool: one place for the configuration
 * calls, the server they name, and their failure message.
 */
#ifndef WALREDO_C_TESTS_POOLS_H
#define WALREDO_C_TESTS_POOLS_H

#include <walredo.h>

/*
 * A pool of the extension at `extension`, with the settings given as key,
 * value pairs after it, ended by NULL. A setting or a pool that cannot be
 * had ends the test (exit 1) with the library's message.
 */
walredo_pool *make_test_pool(const char *extension, ...);

/*
 * Name the PostgreSQL the tests run in `cfg` (make_test_pool does): its
 * pg_version, WALREDO_PG_VERSION (15 if unset), and its pg_bindir,
 * WALREDO_PG_BINDIR (else /usr/lib/postgresql/N/bin); the Makefile sets
 * both. Without them the library would take the first version installed,
 * which need not be the one the extension was built for.
 */
void set_test_server(walredo_config *cfg);

#endif
