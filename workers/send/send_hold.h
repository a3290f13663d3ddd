/* send_hold — the transport refuses us, not a recipient (TRANSPORT_HOLD:
 * SES sending paused, account suspended, quota, sender not verified,
 * credentials): every lane of the process stops using the transport until a
 * back-off ends, then tries again; a delivery ends the hold.
 *
 * The first refusal after a delivery waits `first_ms` (one second when
 * throttled: SES rates are per second), each refusal after a wait ended twice
 * the last wait, up to `max_ms`.  Refusals while held (transfers that were
 * already in flight) change only the reason, so one outage doubles the wait
 * once per try, not once per lane.
 *
 * Metrics (label transport="<name>"):
 *   mailfleet_send_transport_paused{reason}         1 from a refusal for that
 *                                                   reason until a delivery
 *   mailfleet_send_transport_refusals_total{reason} every refused answer
 * Thread-safe. */
#ifndef MF_SEND_HOLD_H
#define MF_SEND_HOLD_H
#include <stddef.h>
#include <stdint.h>

struct send_hold;

/* transport: its name for the metric label ("ses"). */
struct send_hold *send_hold_new(const char *transport, int64_t first_ms, int64_t max_ms);
void send_hold_free(struct send_hold *h);   /* accepts NULL */

/* A refusal for reason (one of transport_hold_reasons) at now (mono_ms()).
 * Returns the new wait in ms when this refusal started one (log
 * it), 0 when a hold was already running. */
int64_t send_hold_refused(struct send_hold *h, const char *reason, int64_t now);
/* A delivery went through: no hold, and the next refusal waits first_ms.
 * Returns 1 when this ended a hold (log it). */
int send_hold_delivered(struct send_hold *h);
/* ms until lanes may use the transport again; 0: go ahead. */
int64_t send_hold_wait(struct send_hold *h, int64_t now);
/* Readiness (http_ready_check on a struct send_hold *): 0 from a refusal
 * until a delivery, with the reason and the time to the next try in why. */
int send_hold_ready_check(void *h, char *why, size_t whylen);

#endif
