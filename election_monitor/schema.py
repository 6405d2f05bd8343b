"""OpenAPI post-processing: every operation documents the errors every operation can give.

Bad input is a 400, a missing credential 401/403, a missing object or page 404, the
anonymous throttle 429, a database lost mid-request 503, and a write's body can be refused
as too large (413); views that document their own errors keep them. One place, so that no endpoint's documentation lags
behind what the API really answers (the fuzz campaign in tests/ checks it)."""

ERROR_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "description": "`detail` (a message), or field name -> messages.",
            "additionalProperties": True,
        }
    }
}
COMMON_ERRORS = {
    "400": "Invalid parameters or body: field name -> messages, or `detail`.",
    "401": "No credentials.",
    "403": "Not allowed (credentials without the needed permission, or anonymous reads are off).",
    "404": "No such object, or no such page.",
    "429": "Too many requests from this anonymous client (see Retry-After).",
    "503": "The database became unavailable during the request, which was not completed; send it again.",
}
WRITE_ERRORS = {"413": "The request body is larger than the limit."}


def document_common_errors(result, generator, request, public):
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            errors = {**COMMON_ERRORS, **(WRITE_ERRORS if method in ("post", "put", "patch") else {})}
            for code, description in errors.items():
                responses.setdefault(code, {"description": description, "content": ERROR_BODY})
    return result
