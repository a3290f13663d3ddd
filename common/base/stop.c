/* stop — the shutdown grace (stop.h). */
#include "stop.h"
#include "timeutil.h"

static _Atomic int64_t grace_ms = STOP_DEFAULT_GRACE_MS;
static _Atomic int64_t deadline_ms;   /* 0 until the stop */

void stop_set_grace_ms(int64_t ms)
{
    atomic_store(&grace_ms, ms > 0 ? ms : STOP_DEFAULT_GRACE_MS);
}

int64_t stop_grace_ms(void)
{
    return atomic_load(&grace_ms);
}

void stop_grace_begin(void)
{
    atomic_store(&deadline_ms, mono_ms() + atomic_load(&grace_ms));
}

int stop_begun(void)
{
    return atomic_load(&deadline_ms) != 0;
}

int64_t stop_grace_left_ms(void)
{
    int64_t d = atomic_load(&deadline_ms);
    if (!d)
        return atomic_load(&grace_ms);
    int64_t left = d - mono_ms();
    return left > 0 ? left : 0;
}
