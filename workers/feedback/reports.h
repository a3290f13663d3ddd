/* reports — delivery status notifications (RFC 3464) and abuse feedback
 * reports (RFC 5965) read with GMime into plain structs.  No policy here:
 * policy.c decides what a report means. */
#ifndef MF_REPORTS_H
#define MF_REPORTS_H
#include <stddef.h>

#define REPORT_MAX_RCPT 32

enum report_kind { REPORT_UNKNOWN = 0, REPORT_DSN, REPORT_ARF };

struct report_recipient {
    char address[256];      /* Final-Recipient (or Original-Recipient), normalized */
    char action[32];        /* failed, delayed, delivered, relayed, expanded */
    char status[16];        /* "5.1.1" */
    char diagnostic[512];   /* Diagnostic-Code, e.g. "smtp; 550 5.1.1 user unknown" */
    char remote_mta[256];
};

struct report {
    enum report_kind kind;
    struct report_recipient rcpt[REPORT_MAX_RCPT];
    size_t n_rcpt;
    char reporting_mta[256];
    char feedback_type[32];        /* ARF: abuse, fraud, virus, other, not-spam */
    char original_rcpt[256];       /* ARF: Original-Rcpt-To */
    char orig_message_id[256];     /* from the returned message or its headers */
    char orig_return_path[320];    /* Return-Path of the returned message (VERP) */
    char orig_to[320];             /* To of the returned message */
};

/* Parses a whole message (file or buffer).  0 on success (kind may still be
 * REPORT_UNKNOWN for mail that is neither), <0 with err when unreadable. */
int report_parse_file(const char *path, struct report *out, char *err, size_t errlen);
int report_parse_mem(const char *buf, size_t len, struct report *out, char *err, size_t errlen);

/* Calls cb for each "Name: value" field (unfolded) of the header blocks in
 * buf; block counts blank-line separated groups from 0.  Shared with SNS-free
 * callers that read delivery-status-like text. */
typedef void (*report_field_cb)(void *opaque, int block, const char *name, const char *value);
void report_fields(const char *buf, size_t len, report_field_cb cb, void *opaque);

#endif
