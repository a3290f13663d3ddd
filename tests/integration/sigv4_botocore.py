"""Reference SigV4 signatures from Debian's python3-botocore.

botocore reads the clock inside add_auth (datetime.datetime.utcnow()), so a
fixed signing time is had by swapping the datetime module botocore.auth sees
for one whose utcnow() returns the instant we want.  Nothing else in botocore
is touched: canonicalisation, key derivation and encoding are its own.
"""
import datetime
import types
from unittest import mock

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def _fixed_clock(amz_date):
    when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")

    class FixedDateTime(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return when

        @classmethod
        def now(cls, tz=None):
            return when if tz is None else when.replace(tzinfo=datetime.timezone.utc).astimezone(tz)

    return types.SimpleNamespace(datetime=FixedDateTime, timezone=datetime.timezone,
                                 timedelta=datetime.timedelta)


def sign_headers(method, url, amz_date, access_key, secret_key, region, service, token=None,
                 headers=None, params=None, body=b"", s3=True):
    """Signs like botocore's (S3)SigV4Auth.  Returns (authorization, headers)
    where headers are every header botocore put on the request apart from
    Authorization (X-Amz-Date, X-Amz-Content-SHA256, X-Amz-Security-Token, the
    caller's own)."""
    creds = Credentials(access_key, secret_key, token)
    req = AWSRequest(method=method, url=url, headers=dict(headers or {}), params=dict(params or {}),
                     data=body)
    auth_cls = botocore.auth.S3SigV4Auth if s3 else botocore.auth.SigV4Auth
    with mock.patch.object(botocore.auth, "datetime", _fixed_clock(amz_date)):
        auth_cls(creds, service, region).add_auth(req)
    out = {k: v for k, v in req.headers.items() if k.lower() != "authorization"}
    return req.headers["Authorization"], out


def presign_url(url, amz_date, access_key, secret_key, region, expires, token=None, service="s3"):
    """A pre-signed GET URL from botocore's S3SigV4QueryAuth."""
    creds = Credentials(access_key, secret_key, token)
    req = AWSRequest(method="GET", url=url)
    with mock.patch.object(botocore.auth, "datetime", _fixed_clock(amz_date)):
        botocore.auth.S3SigV4QueryAuth(creds, service, region, expires=expires).add_auth(req)
    return req.url


def payload_hash(body):
    import hashlib
    return hashlib.sha256(body).hexdigest()
