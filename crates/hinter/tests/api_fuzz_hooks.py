"""schemathesis hooks of the API fuzz test (crates/hinter/tests/api_fuzz.rs, which names this
file in SCHEMATHESIS_HOOKS).

The OpenAPI document states every input rule the server checks, and the test runs every
check, `positive_data_acceptance` (a request the document calls valid is accepted) and
`negative_data_rejection` (one it calls invalid is refused) included. Three answers to valid
requests depend on something no schema can hold: the server's state, its configuration, or
another header. Only for those, and only in requests generated as valid, this hook changes
the request before it is sent, so that it stays valid and the answer is the one the request
itself calls for:

- `Idempotency-Key` (POST /api/v1/jobs, POST /api/v1/jobs/batch): a key used before with
  another body is 422 `idempotency_key_reused`, by design (state). Each valid request gets a
  key of its own, still of the documented form.
- `callback_url` (the same routes): a server without `--callback-secret` refuses every
  callback (422), and one with it would send the callbacks to the generated hosts
  (configuration). It is left out of valid requests; its form is still fuzzed by invalid ones.
"""

import itertools

import schemathesis

_KEYS = itertools.count(1)
_ENQUEUE = {"/api/v1/jobs", "/api/v1/jobs/batch"}


def _is_valid(case):
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if not _is_valid(case):
        return
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
