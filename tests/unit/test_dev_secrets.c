/* dev_secrets: which listen addresses stay on this host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dev_secrets.h"

static void test_loopback_table(void **state)
{
    static const struct { const char *addr; int loopback; } rows[] = {
        { "", 1 },                    /* off */
        { "127.0.0.1:2525", 1 },
        { "127.1.2.3:9100", 1 },      /* all of 127.0.0.0/8 */
        { "localhost:8025", 1 },
        { "LOCALHOST:8025", 1 },
        { "[::1]:9100", 1 },
        { "0.0.0.0:2525", 0 },
        { ":2525", 0 },               /* every address */
        { "[::]:2525", 0 },
        { "10.0.0.5:2525", 0 },
        { "128.0.0.1:2525", 0 },
        { "127.0.0.1.example.com:25", 0 },
        { "mail.example.com:25", 0 },
        { "[::ffff:127.0.0.1]:25", 0 },   /* mapped: not bound as loopback by every stack */
        { "[::1:25", 0 },
    };
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        if (dev_secrets_loopback(rows[i].addr) != rows[i].loopback)
            fail_msg("%s: want %d", rows[i].addr, rows[i].loopback);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopback_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
