"""List options of a list/watch request, decoded as the Kubernetes API server decodes them.

Shared by both requestinfo backends (like native.errors): it runs only for a list or watch whose
query has a fieldSelector (or an unusual watch value), and porting two selector grammars twice
would buy drift, not speed. Sources, k8s.io/apimachinery: runtime/conversion.go (bool and int64
parameters), fields/selector.go (ParseSelector, UnescapeValue, RequiresExactMatch),
labels/selector.go (Parse), util/validation (IsQualifiedName, IsValidLabelValue) and
apiserver/pkg/endpoints/request/requestinfo.go (the fallback when decoding fails).

Query values are str; a byte that is not UTF-8 stands as its surrogateescape code point.
"""
import re

_GO_INT64 = re.compile(r"[+-]?[0-9]+\Z")
_QUALIFIED_NAME = re.compile(r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def decode_list_options(params: dict) -> tuple:
    """(watch, name) for a list request; params maps each query key to its first value."""
    watch = params.get("watch")
    if not _decodes(params):
        # requestinfo.go: when the options do not decode, only `watch` is still honoured,
        # compared after strings.ToLower (the decoder itself uses strings.EqualFold).
        return watch is not None and watch.lower() not in ("false", "0"), ""
    watch = watch is not None and not (watch == "0" or _equal_fold_false(watch))
    name = ""
    selector = params.get("fieldSelector")
    if selector is not None:
        name = _exact_match(_field_selector(selector), "metadata.name")
        if name in (".", "..") or "/" in name or "%" in name:  # path.IsValidPathSegmentName
            name = ""
    return watch, name


def _equal_fold_false(value: str) -> bool:
    # strings.EqualFold(value, "false"): simple case folding; "ſ" (U+017F) folds to "s".
    return value.replace("\u017f", "s").lower() == "false"


def _decodes(params: dict) -> bool:
    """Whether url.Values → metav1.ListOptions → internal ListOptions succeeds."""
    for key in ("limit", "timeoutSeconds"):
        if key in params and not _is_go_int64(params[key]):
            return False
    if "fieldSelector" in params:
        try:
            _field_selector(params["fieldSelector"])
        except ValueError:
            return False
    return "labelSelector" not in params or _LabelSelector(params["labelSelector"]).valid()


def _is_go_int64(text: str) -> bool:
    """strconv.ParseInt(text, 10, 64) succeeds."""
    return bool(_GO_INT64.match(text)) and -(1 << 63) <= int(text) < (1 << 63)


def _go_order(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # Go sorts strings byte by byte


def _field_selector(selector: str) -> list:
    """fields.ParseSelector: the (field, operator, value) terms, in Go's order; ValueError if bad."""
    terms = []
    for part in sorted(_split_terms(selector), key=_go_order):
        if not part:
            continue
        for i, char in enumerate(part):
            if char == "!" and part.startswith("!=", i):
                field, op, value = part[:i], "!=", part[i + 2:]
                break
            if char == "=":
                op = "==" if part.startswith("==", i) else "="
                field, value = part[:i], part[i + len(op):]
                break
        else:
            raise ValueError("invalid field selector term")
        terms.append((field, op, _unescape_value(value)))
    return terms


def _split_terms(selector: str) -> list:
    """Split at commas that are not backslash-escaped (the backslash stays)."""
    if not selector:
        return []
    terms, start, in_slash = [], 0, False
    for i, char in enumerate(selector):
        if in_slash:
            in_slash = False
        elif char == "\\":
            in_slash = True
        elif char == ",":
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return terms


def _unescape_value(value: str) -> str:
    if not any(c in value for c in "\\,="):
        return value
    out, in_slash = [], False
    for char in value:
        if in_slash:
            if char not in "\\,=":
                raise ValueError("invalid escape sequence")
            out.append(char)
            in_slash = False
        elif char == "\\":
            in_slash = True
        elif char in ",=":
            raise ValueError("unescaped character in value")
        else:
            out.append(char)
    if in_slash:
        raise ValueError("invalid escape sequence")
    # Go rebuilds the value rune by rune: each byte that is not UTF-8 becomes U+FFFD.
    return _NOT_UTF8.sub("\ufffd", "".join(out))


def _exact_match(terms: list, field: str) -> str:
    for term_field, op, value in terms:
        if term_field == field and op != "!=":
            return value
    return ""


def _is_label_key(key: str) -> bool:
    """validation.IsQualifiedName."""
    parts = key.split("/")
    if len(parts) > 2:
        return False
    if len(parts) == 2 and not (0 < len(parts[0]) <= 253 and _DNS1123_SUBDOMAIN.match(parts[0])):
        return False
    return 0 < len(parts[-1]) <= 63 and bool(_QUALIFIED_NAME.match(parts[-1]))


def _is_label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and bool(_QUALIFIED_NAME.match(value)))


_EOS, _ID, _ERROR = "end", "identifier", "error"  # token kinds besides the operator literals
_OPERATORS = {")", ",", "!", "==", "=", ">", "in", "<", "!=", "notin", "("}
_SPECIAL_SYMBOLS = "=!(),><"
_WHITESPACE = " \t\r\n"


class _LabelSelector:
    """Whether labels.Parse accepts a selector: its lexer and parser, checking only validity."""

    def __init__(self, text: str) -> None:
        self._text, self._pos = text, 0
        self._tokens = []
        while True:
            token = self._lex()
            self._tokens.append(token)
            if token[0] == _EOS:
                break
        self._at = 0

    # The lexer reads a NUL byte like the end of the input, as Go's does.
    def _read(self) -> str:
        if self._pos < len(self._text):
            self._pos += 1
            return self._text[self._pos - 1]
        return "\0"

    def _lex(self) -> tuple:
        char = self._read()
        while char in _WHITESPACE:
            char = self._read()
        if char == "\0":
            return _EOS, ""
        self._pos -= 1
        if char in _SPECIAL_SYMBOLS:
            return self._special_symbol()
        return self._identifier_or_keyword()

    def _identifier_or_keyword(self) -> tuple:
        buffer = []
        while True:
            char = self._read()
            if char == "\0":
                break
            if char in _SPECIAL_SYMBOLS or char in _WHITESPACE:
                self._pos -= 1
                break
            buffer.append(char)
        literal = "".join(buffer)
        return (literal if literal in _OPERATORS else _ID), literal

    def _special_symbol(self) -> tuple:
        buffer, last = "", None
        while True:
            char = self._read()
            if char == "\0":
                break
            if char not in _SPECIAL_SYMBOLS:
                self._pos -= 1
                break
            buffer += char
            if buffer in _OPERATORS:
                last = buffer
            elif last is not None:
                self._pos -= 1
                break
        return (last, last) if last is not None else (_ERROR, buffer)

    def _peek(self, values: bool = True) -> tuple:
        kind, literal = self._tokens[self._at]
        if values and kind in ("in", "notin"):  # keywords are plain values after an operator
            kind = _ID
        return kind, literal

    def _next(self, values: bool = True) -> tuple:
        token = self._peek(values)
        self._at += 1
        return token

    def valid(self) -> bool:
        while True:
            kind = self._peek()[0]
            if kind == _EOS:
                return True
            if kind not in (_ID, "!") or not self._requirement():
                return False
            kind = self._next()[0]
            if kind == _EOS:
                return True
            if kind != "," or self._peek()[0] not in (_ID, "!"):
                return False

    def _requirement(self) -> bool:
        kind, key = self._next()
        negated = kind == "!"
        if negated:
            kind, key = self._next()
        if kind != _ID or not _is_label_key(key):
            return False
        if negated or self._peek()[0] in (_EOS, ","):
            return True  # exists / does not exist
        operator = self._next(values=False)[0]
        if operator in ("in", "notin"):
            values = self._value_set()
        elif operator in ("=", "==", "!=", ">", "<"):
            values = self._exact_value()
        else:
            return False
        if values is None or not all(_is_label_value(v) for v in values):
            return False
        return operator not in (">", "<") or _is_go_int64(values[0])

    def _value_set(self):
        if self._next()[0] != "(":
            return None
        kind = self._peek()[0]
        if kind == ")":
            self._next()
            return [""]
        if kind not in (_ID, ","):
            return None
        values = []
        while True:
            kind, literal = self._next()
            if kind == _ID:
                values.append(literal)
                following = self._peek()[0]
                if following == ")":
                    self._next()
                    return values
                if following != ",":
                    return None
            elif kind == ",":
                following = self._peek()[0]
                values.append("")  # "(," ",," and ",)" each stand for an empty value
                if following == ")":
                    self._next()
                    return values
            else:
                return None

    def _exact_value(self):
        if self._peek()[0] in (_EOS, ","):
            return [""]
        kind, literal = self._next()
        return [literal] if kind == _ID else None
