/* test_pkgconfig.c: builds against an installed libwalredo found with
 * `pkg-config --cflags --libs walredo`; prints the version. */
#include <stdio.h>
#include <string.h>

#include <walredo.h>

int main(void)
{
    const char *v = walredo_version();

    if (v == NULL) {
        fprintf(stderr, "walredo_version() returned NULL\n");
        return 1;
    }
    printf("%s\n", v);
    return strncmp(v, "walredo ", 8) == 0 ? 0 : 1;
}
