"""The API's JSON parser: pathological JSON is a 400 with a message, never a 500.

DRF's JSONParser already refuses NaN and Infinity literals; this one also refuses what would
crash or mislead a later step: nesting deeper than any request of this API needs (Python's
decoder raises RecursionError on deep input, and deep values crash whatever walks them
next), numbers that overflow to infinity (``1e999``), integers beyond Python's digit limit,
text that is not UTF-8, lone surrogates (``"\\ud800"``: no database driver or renderer can
encode them) and objects that name a key twice (which of two ``tx_hash`` values was
meant?). Checking all of it costs a few milliseconds on a 10,000-item list (see
docs/PERFORMANCE.md for how the ingest path is measured).
"""

import json
import math
import re

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding

# Requests of this API are at most a list of objects of scalars (depth 2); 32 leaves room.
MAX_DEPTH = 32
# A \uD800-\uDFFF escape in the raw body: only then can a lone surrogate reach the data.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _unique_keys(pairs: list) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"the key {json.dumps(repeated)[:80]} appears twice in one object")
    return value


def _check_depth(value) -> None:
    stack = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if type(value) is dict else value
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth + 1 > MAX_DEPTH:
                    raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
                stack.append((child, depth + 1))


def _check_text(value) -> None:
    """Refuse lone surrogates anywhere in keys or string values."""
    stack = [value]
    while stack:
        value = stack.pop()
        if type(value) is dict:
            stack.extend(value.keys())
            stack.extend(value.values())
        elif type(value) is list:
            stack.extend(value)
        elif type(value) is str and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff)") from None


def strict_loads(text: str):
    """``json.loads`` that raises ValueError, with a message, for everything this module
    refuses (also used line by line by the JSON Lines import)."""
    try:
        data = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys
        )
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    if type(data) is dict or type(data) is list:
        _check_depth(data)
    if _SURROGATE_ESCAPE.search(text):
        _check_text(data)
    return data


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})
        raw = stream.read() if stream is not None else b""
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as error:
            raise ParseError(f"JSON parse error - the body is not valid {encoding} ({error.reason}).") from None
        try:
            return strict_loads(text)
        except ValueError as error:  # JSONDecodeError, and the checks above
            raise ParseError(f"JSON parse error - {error}") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")
