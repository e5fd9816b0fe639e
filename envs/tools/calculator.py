"""The `calculator` tool: arithmetic through an AST whitelist, never `eval` (ENVS.md section 3).

Allowed: int/float literals, `+ - * / // % **`, unary `+ -`, parentheses and the functions
`sqrt abs round min max floor ceil log exp`. Exponents are capped at 1000 in magnitude and integers
at 10**100, so `9**9**9` is refused instead of hanging. Integers stay exact; floats print with 12
significant digits.
"""

from __future__ import annotations

import ast
import math
import operator
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["CalculatorError", "calculate", "format_number"]

MAX_EXPONENT = 1000
MAX_INT = 10**100
MAX_CHARS = 2000

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "exp": math.exp,
}


class CalculatorError(ValueError):
    """The expression is not allowed or cannot be evaluated; the message says why."""


def format_number(x: int | float) -> str:
    """Ints exactly; floats with 12 significant digits (integral floats without a fraction)."""
    if isinstance(x, bool):
        x = int(x)
    if isinstance(x, int):
        return str(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    text = f"{x:.12g}"
    return text


def _check(x: Any) -> Any:
    if not isinstance(x, (int, float)):  # e.g. complex from (-8) ** 0.5
        raise CalculatorError("the result is not a real number (e.g. a fractional power of a negative number)")
    if isinstance(x, int) and abs(x) > MAX_INT:
        raise CalculatorError("result exceeds 10**100 in magnitude")
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        raise CalculatorError("result is not a finite number")
    return x


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalculatorError(f"only numbers are allowed, got {node.value!r}")
        return _check(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(right) > MAX_EXPONENT:
                raise CalculatorError(f"exponent {format_number(right)} exceeds {MAX_EXPONENT}")
            if isinstance(left, int) and isinstance(right, int) and right > 0 and left not in (-1, 0, 1):
                if right * math.log10(abs(left)) > 100:
                    raise CalculatorError("result exceeds 10**100 in magnitude")
        try:
            return _check(_BINOPS[type(node.op)](left, right))
        except ZeroDivisionError as e:
            raise CalculatorError("division by zero") from e
        except OverflowError as e:
            raise CalculatorError("numeric overflow") from e
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.dump(node.func)[:40]
            raise CalculatorError(f"function {name!r} is not allowed; allowed: {', '.join(sorted(_FUNCS))}")
        if node.keywords:
            raise CalculatorError("keyword arguments are not allowed")
        args = [_eval(a) for a in node.args]
        try:
            return _check(_FUNCS[node.func.id](*args))
        except (ValueError, TypeError, OverflowError) as e:
            raise CalculatorError(f"{node.func.id}: {e}") from e
    raise CalculatorError(f"{type(node).__name__} is not allowed: use numbers, + - * / // % **, parentheses and "
                          f"{', '.join(sorted(_FUNCS))}")


def calculate(expression: str) -> str:
    """Evaluate `expression` under the whitelist; return the formatted result or raise CalculatorError."""
    if len(expression) > MAX_CHARS:
        raise CalculatorError(f"expression longer than {MAX_CHARS} characters")
    try:
        with warnings.catch_warnings():  # a model's "1and 2" is refused in the observation, not warned about on stderr
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise CalculatorError(f"syntax error: {getattr(e, 'msg', e)}") from e
    try:
        return format_number(_eval(tree))
    except RecursionError as e:
        raise CalculatorError("expression nests too deeply") from e
    except (TypeError, ValueError, ArithmeticError) as e:  # any other failure of arithmetic on numbers
        if isinstance(e, CalculatorError):
            raise
        raise CalculatorError(f"cannot evaluate: {e}") from e
