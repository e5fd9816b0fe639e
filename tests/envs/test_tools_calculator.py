"""Calculator tool: the AST whitelist, exact ints, float formatting, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditgym.envs.tools.calculator import CalculatorError, calculate, format_number


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("2 + 3 * 4", "14"),
        ("(48213 + 9312) * 55120 - 7712", str((48213 + 9312) * 55120 - 7712)),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-7 % 3", "2"),
        ("2 ** 10", "1024"),
        ("-(3)", "-3"),
        ("+4", "4"),
        ("sqrt(16)", "4"),
        ("1 / 3", "0.333333333333"),
        ("round(2.567, 2)", "2.57"),
        ("max(1, 5, 3) + min(4, 2)", "7"),
        ("floor(2.7) + ceil(2.1)", "5"),
        ("abs(-12345678901234567890)", "12345678901234567890"),
        ("log(exp(2))", "2"),
        ("10 ** 100", "1" + "0" * 100),
    ],
)
def test_allowed_expressions(expr: str, want: str) -> None:
    assert calculate(expr) == want


@pytest.mark.parametrize(
    ("expr", "msg"),
    [
        ("__import__('os').system('true')", "not allowed"),
        ("os.getcwd()", "not allowed"),
        ("(1).real", "Attribute is not allowed"),
        ("(lambda: 1)()", "not allowed"),
        ("open('x')", "'open' is not allowed"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("[1, 2]", "List is not allowed"),
        ("x + 1", "Name is not allowed"),
        ("9**9**9", "exponent"),
        ("10 ** 101", "10**100"),
        ("2 ** 2000", "exponent 2000 exceeds 1000"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "sqrt"),
        ("1 +", "syntax error"),
        ("round(1.5, ndigits=1)", "keyword"),
    ],
)
def test_refused_expressions(expr: str, msg: str) -> None:
    with pytest.raises(CalculatorError, match=msg.replace("(", r"\(").replace("*", r"\*")):
        calculate(expr)


def test_a_number_glued_to_a_keyword_is_refused_without_a_warning() -> None:
    """Python parses "1and 2" with a SyntaxWarning on stderr; the model's typo must only be an observation."""
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(CalculatorError, match="not allowed"):
            calculate("1and 2")
    assert not [w for w in seen if issubclass(w.category, SyntaxWarning)]


def test_format_number() -> None:
    assert format_number(3) == "3"
    assert format_number(2.0) == "2"
    assert format_number(0.1 + 0.2) == "0.3"
    assert format_number(123456789.123456789) == "123456789.123"


@given(st.lists(st.integers(-10**6, 10**6), min_size=2, max_size=6), st.lists(st.sampled_from("+-*"), min_size=5, max_size=5))
def test_integer_expressions_are_exact(nums: list[int], ops: list[str]) -> None:
    expr = str(nums[0])
    for op, n in zip(ops, nums[1:]):
        expr = f"({expr}) {op} ({n})"
    assert calculate(expr) == str(eval(expr))  # reference: Python's own integer arithmetic


@pytest.mark.parametrize("expr", ["(-8)**0.5", "(-8) ** -0.5", "abs((-2) ** 0.5)", "(-1) ** (1 / 3) + 1"])
def test_complex_results_are_refused(expr: str) -> None:
    with pytest.raises(CalculatorError, match="not a real number"):
        calculate(expr)


_ATOMS = st.one_of(st.integers(-20, 20).map(str), st.floats(-50, 50, allow_nan=False).map(lambda x: f"{x:.3g}"),
                   st.sampled_from(["0", "0.5", "-0.5", "1e308", "1e-320"]))


@st.composite
def _expressions(draw: st.DrawFn, depth: int = 3) -> str:
    if depth == 0 or draw(st.booleans()):
        return draw(_ATOMS)
    kind = draw(st.sampled_from(["bin", "un", "call"]))
    if kind == "bin":
        op = draw(st.sampled_from(["+", "-", "*", "/", "//", "%", "**"]))
        return f"({draw(_expressions(depth - 1))}) {op} ({draw(_expressions(depth - 1))})"
    if kind == "un":
        return f"-({draw(_expressions(depth - 1))})"
    fn = draw(st.sampled_from(["sqrt", "abs", "round", "min", "max", "floor", "ceil", "log", "exp"]))
    args = draw(st.lists(_expressions(depth - 1), min_size=0, max_size=3))
    return f"{fn}({', '.join(args)})"


@given(_expressions())
def test_calculator_is_total_on_arithmetic(expr: str) -> None:
    """Any arithmetic expression gives a real-number string or a CalculatorError, never another exception."""
    try:
        out = calculate(expr)
    except CalculatorError:
        return
    assert isinstance(out, str) and "j" not in out and out not in ("nan", "inf", "-inf")
