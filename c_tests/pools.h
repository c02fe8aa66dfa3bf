/*
 * pools.h: how the C tests make a pool: one place for the configuration
 * calls and their failure message.
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

#endif
