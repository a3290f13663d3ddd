/* sigv4 — AWS Signature Version 4 (OpenSSL HMAC/SHA-256).
 *
 * Written here rather than using curl's CURLOPT_AWS_SIGV4: curl 7.88 mis-signs
 * requests to non-default ports (the Host it signs drops the port) and cannot
 * produce query-string pre-signed URLs, both of which mailfleet needs.
 * Reproduces AWS's published examples byte for byte (tests/unit/test_sigv4.c). */
#ifndef MF_SIGV4_H
#define MF_SIGV4_H
#include <stddef.h>
#include <stdint.h>

struct sigv4_creds {
    const char *access_key;
    const char *secret_key;
    const char *session_token;   /* may be NULL */
    const char *region;          /* "us-east-1" */
    const char *service;         /* "s3", "ses" */
};

struct sigv4_header { const char *name; const char *value; };

/* URI-encode per SigV4 (unreserved kept; '/' kept when keep_slash). malloc'd. */
char *sigv4_uri_encode(const char *s, int keep_slash);

/* Signs a request.  path: the already-encoded canonical URI ("/test.txt");
 * query: raw "k=v&k2=v2" (encoded, sorted here) or NULL; headers: must include
 * host (with :port when not default); payload_sha256_hex: hex or
 * "UNSIGNED-PAYLOAD"; amz_date "20130524T000000Z".  Writes the Authorization
 * header value into a malloc'd string; also returns (optional) the canonical
 * request and string to sign for tests. */
char *sigv4_sign(const struct sigv4_creds *cr, const char *method, const char *path,
                 const char *query, const struct sigv4_header *headers, size_t n_headers,
                 const char *payload_sha256_hex, const char *amz_date,
                 char **canonical_request, char **string_to_sign);

/* Query-string pre-signing (X-Amz-Expires 1..604800, UNSIGNED-PAYLOAD, session
 * token as X-Amz-Security-Token).  host includes :port when not default.
 * Returns the malloc'd query string to append after '?', or NULL on bad input. */
char *sigv4_presign_query(const struct sigv4_creds *cr, const char *method, const char *host,
                          const char *path, int expires_s, const char *amz_date);

/* "20130524T000000Z" for a time in seconds; buf >= 17. */
char *sigv4_amz_date(int64_t epoch_s, char *buf, size_t len);

#endif
