/* send_hold — the transport refuses us, not a recipient (TRANSPORT_HOLD:
 * SES sending paused, account suspended, quota, sender not verified,
 * credentials): every lane of the process stops using the transport until a
 * back-off ends, then tries again.
 *
 * Back-off: a hold starts with its reason's base wait (`first_ms`; one
 * second when throttled: SES rates are per second).  A refusal of a
 * transfer that started after the wait ended (the next try) waits twice
 * the last wait, up to `max_ms`, or the new reason's base when the reason
 * changed.  A refusal of a transfer that started earlier (in flight in some
 * lane meanwhile) only changes the reason: one outage doubles the wait
 * once per try, not once per lane or per late answer.
 *
 * The hold ends, and the next one starts from the base again, at the first
 * sign that the transport takes our requests: any answer that is not a
 * refusal (a delivery, a recipient's bounce, a 5xx) to a transfer started
 * after the hold began, or a batch started after the wait that ended with
 * no refusal (also one that made no transfer: its recipients suppressed or
 * delivered meanwhile).
 *
 * Metrics (label transport="<name>"):
 *   mailfleet_send_transport_paused{reason}         1 from a refusal for that
 *                                                   reason until the hold ends
 *   mailfleet_send_transport_refusals_total{reason} every refused answer
 * Times are mono_ms().  Thread-safe. */
#ifndef MF_SEND_HOLD_H
#define MF_SEND_HOLD_H
#include <stddef.h>
#include <stdint.h>

struct send_hold;

/* transport: its name for the metric label ("ses"). */
struct send_hold *send_hold_new(const char *transport, int64_t first_ms, int64_t max_ms);
void send_hold_free(struct send_hold *h);   /* accepts NULL */

/* A refusal for reason (one of transport_hold_reasons) of a transfer
 * started at `started`, now.  Returns the new wait in ms when this refusal
 * started one (log it), 0 when it did not. */
int64_t send_hold_refused(struct send_hold *h, const char *reason, int64_t started, int64_t now);
/* The transport answered a transfer started at `started`, and not with a
 * refusal.  Returns 1 when this ended a hold (log it). */
int send_hold_answered(struct send_hold *h, int64_t started);
/* A batch started at `started` ended without a refusal.  Returns 1 when
 * this ended a hold (log it). */
int send_hold_batch_done(struct send_hold *h, int64_t started);
/* ms until lanes may use the transport again; 0: go ahead. */
int64_t send_hold_wait(struct send_hold *h, int64_t now);
/* Readiness (http_ready_check on a struct send_hold *): 0 from a refusal
 * until the hold ends, with the reason and the time to the next try in why. */
int send_hold_ready_check(void *h, char *why, size_t whylen);

#endif
