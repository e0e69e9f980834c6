"""schemathesis hooks of the API fuzz test (crates/hinter/tests/api_fuzz.rs, which names this
file in SCHEMATHESIS_HOOKS).

The OpenAPI document states every input rule the server checks, and the test runs every
check, `positive_data_acceptance` (a request the document calls valid is accepted) and
`negative_data_rejection` (one it calls invalid is refused) included. Some answers to valid
requests depend on something no schema can hold: the server's state, its configuration, or
a range of instants. Only for those, and only in requests generated as valid, this hook
changes the request before it is sent, so that it stays valid and the answer is the one the
request itself calls for:

- `Idempotency-Key` (POST /api/v1/jobs, POST /api/v1/jobs/batch): a key used before with
  another body is 422 `idempotency_key_reused`, by design (state). Each valid request gets a
  key of its own, still of the documented form.
- `callback_url` (the same routes): a server without `--callback-secret` refuses every
  callback (422), and one with it would send the callbacks to the generated hosts
  (configuration). It is left out of valid requests; its form is still fuzzed by invalid ones.
- times (`run_at`, a schedule's `at`, a worker's `started_at`, `logs[].at`, `progress.at`):
  the server holds instants from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z (what
  RFC 3339 writes in UTC, and so what every client reads back) and refuses others with 422
  naming the field. JSON Schema's `date-time` format cannot bound an instant, and a time
  written on the first or last day of the calendar with an offset (`0001-01-01T00:02:00+01:00`)
  lies outside. Such a time in a valid request gets `Z` for its offset, which keeps it inside.
"""

import datetime
import itertools

import schemathesis

_KEYS = itertools.count(1)
_ENQUEUE = {"/api/v1/jobs", "/api/v1/jobs/batch"}


def _held_time(text):
    """`text` with `Z` for its offset when it is a date-time whose instant lies outside the
    years 0001 to 9999 in UTC; else `text` itself."""
    if len(text) < 20 or text[4] != "-" or text[10] not in "Tt":
        return text
    try:
        written = datetime.datetime.fromisoformat(text)
    except ValueError:
        return text
    if written.tzinfo is None:
        return text
    try:
        written.astimezone(datetime.timezone.utc)
        return text
    except OverflowError:
        return written.replace(tzinfo=datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _hold_times(value):
    """Every string in `value` (nested objects and arrays) through `_held_time`."""
    if isinstance(value, str):
        return _held_time(value)
    if isinstance(value, list):
        return [_hold_times(item) for item in value]
    if isinstance(value, dict):
        return {key: _hold_times(item) for key, item in value.items()}
    return value


def _is_valid(case):
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if not _is_valid(case):
        return
    if isinstance(case.body, (dict, list)):
        case.body = _hold_times(case.body)
    path = case.operation.path
    method = case.method.upper()
    if method == "POST" and path in _ENQUEUE:
        if case.headers and "Idempotency-Key" in case.headers:
            case.headers["Idempotency-Key"] = f"fuzz-{next(_KEYS)}"
        body = case.body
        items = body.get("jobs") if path.endswith("/batch") and isinstance(body, dict) else [body]
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                item.pop("callback_url", None)
