/* The C tests' one check: counts, and on failure prints the condition, a message and libspn's last error.
 * Include after spn.h and stdio.h; report with `checks - failures` passed and `failures` failed. */
#ifndef SPN_TEST_CHECK_H
#define SPN_TEST_CHECK_H

static int failures = 0, checks = 0;
#define CHECK(cond, ...)                                                                                    \
    do {                                                                                                    \
        checks++;                                                                                           \
        if (!(cond)) {                                                                                      \
            failures++;                                                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                 \
            fprintf(stderr, __VA_ARGS__);                                                                   \
            fprintf(stderr, " (last error: %s)\n", spn_last_error());                                      \
        }                                                                                                   \
    } while (0)

#endif
