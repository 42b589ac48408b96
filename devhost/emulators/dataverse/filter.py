"""A real tokenizer + recursive-descent parser for the `$filter` subset Dataverse supports.

Never evaluates text as Python. Supported (the service's documentation, MS-docs:webapi/query/filter-rows.md):
`eq ne gt ge lt le`, `and or not`, parentheses, column-to-column comparison, string
literals with doubled single quotes, unquoted GUIDs and ISO dates, ints/decimals, `null`,
`true`/`false`, `contains/startswith/endswith` (SQL wildcards honoured),
`Microsoft.Dynamics.CRM.In/NotIn(PropertyName='x',PropertyValues=["a","b"])`, and the
OData `col in ('a','b')` operator (spec says unsupported live; accepted here as the brief asks).
String comparisons are case- and accent-insensitive (`devhost.emulators.collation.fold`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from ..collation import fold
from .metadata import GUID_TYPES, INT_TYPES, STRING_TYPES, Attr


class FilterError(ValueError):
    """Malformed filter; `message` is the OData-style text for a 400."""


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?(?![\w:-])")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?![\w.])")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_./]*")
_PUNCT = "(),[]="
KEYWORDS = {"eq", "ne", "gt", "ge", "lt", "le", "and", "or", "not", "in", "null", "true", "false"}
COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}


@dataclass(frozen=True)
class Tok:
    kind: str  # str | jstr | guid | date | num | ident | punct | kw | end
    value: Any
    pos: int


def tokenize(text: str) -> list[Tok]:
    toks: list[Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == "'":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise FilterError(f"There is an unterminated literal at position {i} in '{text}'.")
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            toks.append(Tok("str", "".join(buf), i))
            i = j + 1
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise FilterError(f"There is an unterminated literal at position {i} in '{text}'.")
            try:
                toks.append(Tok("jstr", json.loads(text[i : j + 1]), i))
            except json.JSONDecodeError as exc:
                raise FilterError(f"Invalid string at position {i} in '{text}'.") from exc
            i = j + 1
            continue
        if c in _PUNCT:
            toks.append(Tok("punct", c, i))
            i += 1
            continue
        m = _GUID.match(text, i)
        if m:
            toks.append(Tok("guid", m.group(0).lower(), i))
            i = m.end()
            continue
        m = _DATE.match(text, i)
        if m:
            toks.append(Tok("date", _parse_date(m.group(0)), i))
            i = m.end()
            continue
        m = _NUMBER.match(text, i)
        if m:
            raw = m.group(0)
            toks.append(Tok("num", float(raw) if "." in raw else int(raw), i))
            i = m.end()
            continue
        m = _IDENT.match(text, i)
        if m:
            word = m.group(0)
            toks.append(Tok("kw" if word in KEYWORDS else "ident", word, i))
            i = m.end()
            continue
        raise FilterError(f"Syntax error: character '{c}' is not valid at position {i} in '{text}'.")
    toks.append(Tok("end", None, n))
    return toks


def _parse_date(raw: str) -> datetime:
    if "T" not in raw:
        return datetime.fromisoformat(raw).replace(tzinfo=timezone.utc)
    value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# --- AST -------------------------------------------------------------------------------
Node = tuple[Any, ...]  # ("col", name) | ("lit", kind, value) | ("cmp", op, l, r) | ("and"/"or", a, b)
# | ("not", a) | ("in", col, [lits], negate) | ("fn", name, col, lit)


class Parser:
    def __init__(self, text: str, columns: dict[str, Attr], type_name: str) -> None:
        self.text = text
        self.toks = tokenize(text)
        self.i = 0
        self.columns = columns
        self.type_name = type_name

    def peek(self) -> Tok:
        return self.toks[self.i]

    def take(self) -> Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, kind: str, value: Any = None) -> Tok:
        tok = self.take()
        if tok.kind != kind or (value is not None and tok.value != value):
            want = value if value is not None else kind
            raise FilterError(f"Syntax error: expected '{want}' at position {tok.pos} in '{self.text}'.")
        return tok

    def parse(self) -> Node:
        node = self.or_()
        tok = self.peek()
        if tok.kind != "end":
            raise FilterError(f"Syntax error at position {tok.pos} in '{self.text}'.")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.peek().kind == "kw" and self.peek().value == "or":
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.unary()
        while self.peek().kind == "kw" and self.peek().value == "and":
            self.take()
            node = ("and", node, self.unary())
        return node

    def unary(self) -> Node:
        tok = self.peek()
        if tok.kind == "kw" and tok.value == "not":
            self.take()
            return ("not", self.unary())
        if tok.kind == "punct" and tok.value == "(":
            self.take()
            node = self.or_()
            self.expect("punct", ")")
            return node
        return self.predicate()

    def column(self, name: str, pos: int) -> Node:
        if name not in self.columns:
            raise FilterError(f"Could not find a property named '{name}' on type '{self.type_name}'.")
        return ("col", name)

    def predicate(self) -> Node:
        tok = self.take()
        if tok.kind == "ident" and self.peek().kind == "punct" and self.peek().value == "(":
            return self.function(tok)
        left = self.operand(tok)
        op = self.take()
        if op.kind == "kw" and op.value in COMPARISONS:
            right = self.operand(self.take())
            return self.comparison(op.value, left, right)
        if op.kind == "kw" and op.value == "in":
            if left[0] != "col":
                raise FilterError(f"Syntax error at position {op.pos} in '{self.text}'.")
            self.expect("punct", "(")
            values = [self.literal(self.take())]
            while self.peek().kind == "punct" and self.peek().value == ",":
                self.take()
                values.append(self.literal(self.take()))
            self.expect("punct", ")")
            return ("in", left[1], [self.coerce(left[1], v, "In") for v in values], False)
        raise FilterError(f"Syntax error: expected a comparison operator at position {op.pos} in '{self.text}'.")

    def operand(self, tok: Tok) -> Node:
        if tok.kind == "ident":
            return self.column(tok.value, tok.pos)
        return self.literal(tok)

    def literal(self, tok: Tok) -> Node:
        if tok.kind in {"str", "jstr"}:
            return ("lit", "str", tok.value)
        if tok.kind in {"guid", "date", "num"}:
            return ("lit", tok.kind, tok.value)
        if tok.kind == "kw" and tok.value in {"null", "true", "false"}:
            if tok.value == "null":
                return ("lit", "null", None)
            return ("lit", "bool", tok.value == "true")
        raise FilterError(f"Syntax error: expected a value at position {tok.pos} in '{self.text}'.")

    def coerce(self, column: str, lit: Node, op: str) -> Node:
        """Type-check a literal against a column (Dataverse rejects incompatible operand types)."""
        kind = lit[1]
        if kind == "null":
            return lit
        attr = self.columns[column]
        t = attr.attribute_type
        ok = (
            (t in STRING_TYPES and kind == "str")
            or (t in GUID_TYPES and kind == "guid")
            or (t in INT_TYPES and kind == "num")
            or (t == "Boolean" and kind in {"bool", "num"})
            or (t == "DateTime" and kind == "date")
        )
        if not ok:
            found = {"str": "Edm.String", "guid": "Edm.Guid", "num": "Edm.Int32", "bool": "Edm.Boolean",
                     "date": "Edm.DateTimeOffset"}[kind]
            raise FilterError(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{attr.edm_type}' and '{found}' for operator kind '{op}'."
            )
        return lit

    def comparison(self, op: str, left: Node, right: Node) -> Node:
        if left[0] == "col" and right[0] == "lit":
            right = self.coerce(left[1], right, op)
        elif right[0] == "col" and left[0] == "lit":
            left = self.coerce(right[1], left, op)
        return ("cmp", op, left, right)

    def function(self, name_tok: Tok) -> Node:
        name = name_tok.value
        self.expect("punct", "(")
        if name in {"contains", "startswith", "endswith"}:
            col = self.column(self.expect("ident").value, name_tok.pos)
            self.expect("punct", ",")
            lit = self.literal(self.take())
            self.expect("punct", ")")
            if lit[1] != "str" or self.columns[col[1]].attribute_type not in STRING_TYPES:
                raise FilterError(f"The '{name}' function requires a string column and a string value.")
            return ("fn", name, col[1], lit[2])
        if name in {"Microsoft.Dynamics.CRM.In", "Microsoft.Dynamics.CRM.NotIn"}:
            args: dict[str, Any] = {}
            while True:
                key = self.expect("ident").value
                self.expect("punct", "=")
                if key == "PropertyName":
                    args[key] = self.expect("str").value
                elif key == "PropertyValues":
                    self.expect("punct", "[")
                    values: list[Node] = []
                    if not (self.peek().kind == "punct" and self.peek().value == "]"):
                        values.append(self.literal(self.take()))
                        while self.peek().kind == "punct" and self.peek().value == ",":
                            self.take()
                            values.append(self.literal(self.take()))
                    self.expect("punct", "]")
                    args[key] = values
                else:
                    raise FilterError(f"Unknown parameter '{key}' for function '{name}'.")
                if self.peek().kind == "punct" and self.peek().value == ",":
                    self.take()
                    continue
                break
            self.expect("punct", ")")
            if "PropertyName" not in args or "PropertyValues" not in args:
                raise FilterError(f"Function '{name}' requires PropertyName and PropertyValues.")
            col = self.column(args["PropertyName"], name_tok.pos)[1]
            attr = self.columns[col]
            lits = []
            for lit in args["PropertyValues"]:
                # In() takes its values as strings; convert them to the column's type.
                if lit[1] == "str" and attr.attribute_type in GUID_TYPES:
                    if not _GUID.fullmatch(lit[2]):
                        raise FilterError(f"'{lit[2]}' is not a valid Guid.")
                    lit = ("lit", "guid", lit[2].lower())
                elif lit[1] == "str" and attr.attribute_type in INT_TYPES:
                    try:
                        lit = ("lit", "num", int(lit[2]))
                    except ValueError as exc:
                        raise FilterError(f"'{lit[2]}' is not a valid integer.") from exc
                lits.append(self.coerce(col, lit, "In"))
            return ("in", col, lits, name.endswith("NotIn"))
        raise FilterError(f"Unknown function '{name}' at position {name_tok.pos} in '{self.text}'.")


def parse(text: str, columns: dict[str, Attr], type_name: str) -> Node:
    """Parse `text` against the entity's readable columns; raises FilterError (→ HTTP 400)."""
    return Parser(text, columns, type_name).parse()


# --- evaluation --------------------------------------------------------------------------
def _norm(value: Any) -> Any:
    if isinstance(value, str):
        if _DATE.fullmatch(value) and "T" in value:
            return _parse_date(value)
        return fold(value)  # case- and accent-insensitive, as a Dataverse collation compares
    if isinstance(value, datetime):
        return value
    return value


norm = _norm  # the value `evaluate` compares; the store's column indexes key on it


def _value(node: Node, row: dict[str, Any]) -> Any:
    if node[0] == "col":
        return _norm(row.get(node[1]))
    return _norm(node[2])


def _like(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                neg = body.startswith("^")
                body = body[1:] if neg else body
                out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


def evaluate(node: Node, row: dict[str, Any]) -> bool:
    kind = node[0]
    if kind == "and":
        return evaluate(node[1], row) and evaluate(node[2], row)
    if kind == "or":
        return evaluate(node[1], row) or evaluate(node[2], row)
    if kind == "not":
        return not evaluate(node[1], row)
    if kind == "cmp":
        op, a, b = node[1], _value(node[2], row), _value(node[3], row)
        if op == "eq":
            return bool(a == b)
        if op == "ne":
            return bool(a != b)
        if a is None or b is None:
            return False
        try:
            return _CMP[op](a, b)
        except TypeError:
            return False
    if kind == "in":
        value = _norm(row.get(node[1]))
        hit = any(value == _norm(lit[2]) for lit in node[2])
        return hit != node[3]
    if kind == "fn":
        value = row.get(node[2])
        if value is None:
            return False
        pattern = _like(node[3])
        pattern = {"contains": f".*{pattern}.*", "startswith": f"{pattern}.*", "endswith": f".*{pattern}"}[node[1]]
        return re.fullmatch(pattern, value, re.IGNORECASE | re.DOTALL) is not None
    raise FilterError(f"Cannot evaluate {kind}")


def compile_filter(node: Node) -> Callable[[dict[str, Any]], bool]:
    """`evaluate(node, row)` as a function of the row, with literals normalised once.

    Same results and the same exceptions as `evaluate` row by row: any part whose literals fail to
    normalise, or that is not sped up here, falls back to `evaluate`.
    """
    kind = node[0]
    if kind == "or":
        # An `or` chain of `col eq <literal>` on one column is an In(): one set lookup per row.
        parts = [_eq_parts(t) for t in _or_terms(node)]
        columns = {p[0] if p else None for p in parts}
        if len(columns) == 1 and None not in columns:
            try:
                wanted = [_norm(p[1]) for p in parts if p]
            except Exception:
                return lambda row: evaluate(node, row)
            return _member(columns.pop() or "", wanted, False)
        first, second = compile_filter(node[1]), compile_filter(node[2])
        return lambda row: first(row) or second(row)
    if kind == "and":
        first, second = compile_filter(node[1]), compile_filter(node[2])
        return lambda row: first(row) and second(row)
    if kind == "not":
        inner = compile_filter(node[1])
        return lambda row: not inner(row)
    if kind == "in":
        try:
            wanted = [_norm(lit[2]) for lit in node[2]]
        except Exception:
            return lambda row: evaluate(node, row)
        return _member(node[1], wanted, node[3])
    if (parts := _eq_parts(node)) is not None:
        column, literal = parts
        try:
            value = _norm(literal)
        except Exception:
            return lambda row: evaluate(node, row)
        if node[2][0] == "col":
            return lambda row: bool(_norm(row.get(column)) == value)
        return lambda row: bool(value == _norm(row.get(column)))
    return lambda row: evaluate(node, row)


def _or_terms(node: Node) -> list[Node]:
    """The operands of an `or` chain, left to right (the parser nests chains to the left)."""
    terms: list[Node] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if n[0] == "or":
            stack += [n[2], n[1]]
        else:
            terms.append(n)
    return terms


def _eq_parts(node: Node) -> tuple[str, Any] | None:
    """(column, literal value) for `col eq lit` / `lit eq col`, else None."""
    if node[0] != "cmp" or node[1] != "eq":
        return None
    left, right = node[2], node[3]
    if left[0] == "col" and right[0] == "lit":
        return left[1], right[2]
    if right[0] == "col" and left[0] == "lit":
        return right[1], left[2]
    return None


def _member(column: str, wanted: list[Any], negate: bool) -> Callable[[dict[str, Any]], bool]:
    try:
        fast: set[Any] | None = set(wanted)
    except TypeError:
        fast = None

    def test(row: dict[str, Any]) -> bool:
        value = _norm(row.get(column))
        hit = None
        if fast is not None:
            try:
                hit = value in fast
            except TypeError:  # an unhashable stored value: compare one by one as `evaluate` does
                pass
        if hit is None:
            hit = any(value == w for w in wanted)
        return hit != negate

    return test


def index_keys(node: Node, primary: str) -> list[tuple[str, list[Any]]] | None:
    """Where an index can answer `node`: a list of (column, normalised values) whose matching rows,
    united, are a superset of the rows `node` accepts; None when it cannot (then scan every row)."""
    kind = node[0]
    if kind == "in" and not node[3]:
        try:
            return [(node[1], [_norm(lit[2]) for lit in node[2]])]
        except Exception:
            return None
    if kind == "cmp":
        parts = _eq_parts(node)
        if parts is None:
            return None
        try:
            return [(parts[0], [_norm(parts[1])])]
        except Exception:
            return None
    if kind == "or":
        out: list[tuple[str, list[Any]]] = []
        for term in _or_terms(node):
            sub = index_keys(term, primary)
            if sub is None:
                return None
            out += sub
        return out
    if kind == "and":
        # Either side alone bounds the result: prefer the primary key, then the fewest values.
        sides = [k for k in (index_keys(node[1], primary), index_keys(node[2], primary)) if k is not None]
        if not sides:
            return None
        return min(sides, key=lambda k: (any(c != primary for c, _ in k), sum(len(v) for _, v in k)))
    return None
