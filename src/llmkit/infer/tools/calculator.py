"""A calculator a model can call: exact arithmetic, parsed, never evaluated as Python.

The expression is parsed with :mod:`ast` and walked over a whitelist: numbers, ``+ - * / // %
**``, parentheses, the constants ``pi`` and ``e``, and a few math functions (``sqrt``, ``abs``,
``round``, ``floor``, ``ceil``, ``log``, ``ln``, ``log10``, ``log2``, ``exp``, ``sin``, ``cos``,
``tan``, ``factorial``, ``gcd``, ``min``, ``max``). Anything else (other names, attributes,
subscripts, strings, comprehensions, lambdas, keyword arguments) is refused with a message that
says what was found. ``^`` means power and ``n!`` factorial, as people write them; full-width
digits and ``× ÷`` (as typed in Chinese) are read too.

Integers stay exact. Results may not grow past :data:`MAX_DIGITS` digits, and powers and
factorials are checked *before* they are computed, so ``9**9**9`` or ``100000!`` is an error
message, not a frozen process with exhausted memory.
"""

from __future__ import annotations

import ast
import math
import operator
import unicodedata

from llmkit.infer.tools.base import Tool, ToolError

MAX_DIGITS = 1000
"""Largest integer result, in decimal digits."""
MAX_LENGTH = 500
"""Longest expression accepted, in characters."""

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _checked_factorial(n):
    if not isinstance(n, int) and not (isinstance(n, float) and n.is_integer()):
        raise ToolError(f"factorial needs a whole number, got {_format(n)}")
    n = int(n)
    if n < 0:
        raise ToolError("factorial of a negative number is undefined")
    # log10(n!) ~ n log10(n / e): refuse before computing
    if n > 1 and n * math.log10(n / math.e) > MAX_DIGITS:
        raise ToolError(f"{n}! has more than {MAX_DIGITS} digits; the calculator stops there")
    return math.factorial(n)


def _log(x, base=None):
    return math.log(x) if base is None else math.log(x, base)


_FUNCTIONS = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": _log,
    "ln": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "factorial": _checked_factorial,
    "gcd": math.gcd,
    "min": min,
    "max": max,
}

_DESCRIBE = {
    ast.Name: "the name",
    ast.Attribute: "an attribute",
    ast.Subscript: "an index or slice",
    ast.Constant: "a non-number",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.Lambda: "a lambda",
    ast.Compare: "a comparison",
    ast.BoolOp: "a boolean operator",
    ast.IfExp: "a conditional",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Dict: "a dict",
    ast.Set: "a set",
    ast.JoinedStr: "a string",
    ast.NamedExpr: "an assignment",
    ast.Starred: "a starred argument",
    ast.Await: "await",
}


def _normalise(expression: str) -> str:
    text = unicodedata.normalize("NFKC", expression)  # full-width digits and operators
    text = text.replace("×", "*").replace("÷", "/").replace("−", "-").replace("^", "**")
    return _postfix_factorial(text)


def _postfix_factorial(text: str) -> str:
    """``5!`` -> ``factorial(5)``, ``(2+3)!`` -> ``factorial((2+3))`` (``!=`` is left alone)."""
    while True:
        bang = next((i for i, c in enumerate(text) if c == "!" and text[i + 1 : i + 2] != "="), -1)
        if bang < 0:
            return text
        end = bang
        while end > 0 and text[end - 1].isspace():
            end -= 1
        start = end
        if start > 0 and text[start - 1] == ")":
            depth = 0
            for start in range(end - 1, -1, -1):
                depth += {")": 1, "(": -1}.get(text[start], 0)
                if depth == 0:
                    break
        else:
            while start > 0 and (text[start - 1].isdigit() or text[start - 1] == "."):
                start -= 1
        if start == end:
            raise ToolError("'!' needs a number or a parenthesised expression before it")
        text = f"{text[:start]}factorial({text[start:end]}){text[bang + 1 :]}"


def _check_size(value):
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_DIGITS * 3.33:
        raise ToolError(f"the result has more than {MAX_DIGITS} digits; the calculator stops there")
    if isinstance(value, complex):
        raise ToolError("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is too large for a floating-point number" if math.isinf(value) else "not a number")
    return value


def _power(base, exponent):
    if isinstance(base, (int, float)) and isinstance(exponent, (int, float)):
        if base == 0 and exponent < 0:
            raise ToolError("zero cannot be raised to a negative power")
        if abs(base) > 1 and exponent > 0:
            digits = exponent * math.log10(abs(base))
            if digits > MAX_DIGITS:
                raise ToolError(
                    f"{_format(base)}**{_format(exponent)} has about {digits:.3g} digits; the limit is {MAX_DIGITS}"
                )
    return base**exponent


class _Evaluator(ast.NodeVisitor):
    def generic_visit(self, node):
        what = _DESCRIBE.get(type(node), type(node).__name__)
        raise ToolError(f"{what} is not arithmetic; use numbers, + - * / // % ** ( ) and the listed functions")

    def visit_Expression(self, node):
        return self.visit(node.body)

    def visit_Constant(self, node):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ToolError(f"{node.value!r} is not a number")
        return node.value

    def visit_Name(self, node):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r}; the calculator knows pi, e and {', '.join(_FUNCTIONS)}")

    def visit_UnaryOp(self, node):
        op = _UNARY.get(type(node.op))
        if op is None:
            raise ToolError(f"operator {type(node.op).__name__} is not arithmetic")
        return op(self.visit(node.operand))

    def visit_BinOp(self, node):
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ToolError(f"operator {type(node.op).__name__} is not arithmetic (bitwise operators are refused)")
        left, right = self.visit(node.left), self.visit(node.right)
        if op is operator.pow:
            return _check_size(_power(left, right))
        return _check_size(op(left, right))

    def visit_Call(self, node):
        if not isinstance(node.func, ast.Name):
            self.visit(node.func)  # an attribute, a subscript ...: refused with what it is
        if node.func.id not in _FUNCTIONS:
            raise ToolError(f"calling {node.func.id!r} is not allowed; functions: {', '.join(_FUNCTIONS)}")
        if node.keywords or len(node.args) > 8:
            raise ToolError(f"{node.func.id}() takes plain numbers (at most 8), no keyword arguments")
        args = [self.visit(a) for a in node.args]
        return _check_size(_FUNCTIONS[node.func.id](*args))


def _format(value) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return f"{value:.12g}"
    return str(value)


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression; the result as text. Raises :class:`ToolError` with a
    one-line reason for anything that is not arithmetic or would be too large."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("give an arithmetic expression, e.g. 12*(3+4)")
    if len(expression) > MAX_LENGTH:
        raise ToolError(f"the expression is {len(expression)} characters; the limit is {MAX_LENGTH}")
    text = _normalise(expression.strip())
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolError(f"cannot parse {expression.strip()!r} as arithmetic") from None
    try:
        value = _Evaluator().visit(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("the result is too large for a floating-point number") from None
    except (ValueError, TypeError) as e:
        raise ToolError(f"math error: {e}") from None
    return _format(value)


CALCULATOR = Tool(
    name="calculator",
    description="Exact arithmetic, e.g. 1234*5678 or (3+4)**2/7",
    parameters={"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    function=lambda args: calculate(args["expression"]),
)
