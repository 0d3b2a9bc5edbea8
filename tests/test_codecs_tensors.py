"""instances_to_batch / instances_from_json / validate_batch: accepted layouts, every refusal with its
status, fuzzing."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from service.codecs import tensors
from service.codecs.tensors import instances_from_json, instances_to_batch, validate_batch
from service.errors import BadRequest, PayloadTooLarge, ServiceError
from service.http import json_body

ROW = [0.5] * 784


def with_value(value: object, position: int = 0) -> list:
    row = list(ROW)
    row[position] = value
    return row


# --- accepted --------------------------------------------------------------------------------------


def test_flat_and_nested_items() -> None:
    x = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    flat = instances_to_batch(x.tolist(), max_items=5)
    nested = instances_to_batch(x.reshape(5, 28, 28).tolist(), max_items=5)
    for out in (flat, nested):
        assert out.dtype == np.float32 and out.shape == (5, 784) and out.flags.c_contiguous
        np.testing.assert_array_equal(out, x)


def test_integers_zero_and_one_are_numbers() -> None:
    out = instances_to_batch([[0, 1] * 392], max_items=1)
    np.testing.assert_array_equal(out[0, :2], [0.0, 1.0])


def test_from_real_json() -> None:
    body = orjson.dumps({"instances": [[0.0] * 783 + [1.0]]})
    out = instances_to_batch(orjson.loads(body)["instances"], max_items=4)
    assert out[0, -1] == 1.0


# --- refused ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instances", "status", "fragment"),
    [
        ({"a": 1}, 400, "must be a list"),
        ("[[0.5]]", 400, "must be a list"),
        (None, 400, "must be a list"),
        ([], 400, "empty"),
        ([ROW] * 5, 413, "at most 4"),
        ([ROW[:783]], 400, "instances[0] has 783 values; expected 784"),
        ([ROW, ROW, ROW, ROW + [0.5]], 400, "instances[3] has 785 values"),
        (ROW[:4], 400, "instances[0] is a number"),
        ([ROW, 0.5], 400, "instances[1] is a number"),
        ([ROW, "abc"], 400, "instances[1] is a string"),
        ([ROW, {"b64": "x"}], 400, "instances[1] is an object"),
        ([ROW, None], 400, "instances[1] is null"),
        ([with_value(True)], 400, "instances[0][0] is a boolean"),
        ([with_value(False, 9)], 400, "instances[0][9] is a boolean"),
        ([with_value("0.5", 3)], 400, "instances[0][3] is a string"),
        ([with_value(None, 3)], 400, "instances[0][3] is null"),
        ([with_value([0.5], 3)], 400, "instances[0][3] is a list"),
        ([with_value(255, 7)], 400, "divide 0-255 values by 255"),
        ([with_value(1.5, 7)], 400, "instances[0][7] = 1.5 is outside [0,1]"),
        ([with_value(-0.01, 7)], 400, "outside [0,1]"),
        ([with_value(1e39, 7)], 400, "instances[0][7] is not finite"),
        ([with_value(float("nan"), 7)], 400, "not finite"),
        ([with_value(float("inf"), 7)], 400, "not finite"),
        ([with_value(10**400, 7)], 400, "huge integer"),
        ([[[0.5] * 28] * 27 + [[0.5] * 27]], 400, "instances[0][27] has 27 values; expected 28"),
        ([[[0.5] * 28] * 27 + [[True] + [0.5] * 27]], 400, "instances[0][27][0] is a boolean"),
        ([[[[0.5]] * 28] * 28], 400, "instances[0][0][0] is a list"),
        ([[[0.5]] * 28], 400, "instances[0][0] has 1 values"),
        ([[[0.5] * 28] * 28, ROW[:10]], 400, "instances[1] has 10 values"),
    ],
)
def test_refusals(instances: object, status: int, fragment: str) -> None:
    with pytest.raises(ServiceError) as info:
        instances_to_batch(instances, max_items=4)
    assert info.value.status == status
    assert fragment in info.value.message, info.value.message


def test_too_many_items_is_413_before_looking_at_them() -> None:
    with pytest.raises(PayloadTooLarge):
        instances_to_batch([None] * 10, max_items=9)


# --- validate_batch --------------------------------------------------------------------------------


def test_validate_batch_does_not_copy_float32() -> None:
    x = np.random.default_rng(1).random((3, 784), dtype=np.float32)
    out = validate_batch(x, max_items=3)
    assert np.shares_memory(out, x) and out.flags.c_contiguous
    y = x.reshape(3, 28, 28)
    out = validate_batch(y, max_items=3)
    assert out.shape == (3, 784) and np.shares_memory(out, x)


def test_validate_batch_converts_other_layouts() -> None:
    x = np.random.default_rng(2).random((784, 3))
    out = validate_batch(x.T, max_items=3)  # float64, Fortran-ordered
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, x.T, rtol=1e-6)
    raw = np.zeros(3 * 784 * 4 + 1, np.uint8)[1:].view("<f4").reshape(3, 784)  # misaligned buffer
    assert validate_batch(raw, max_items=3).flags.aligned


@pytest.mark.parametrize(
    ("x", "status", "fragment"),
    [
        (np.zeros((0, 784), np.float32), 400, "empty"),
        (np.zeros((5, 784), np.float32), 413, "at most 4"),
        (np.zeros((2, 783), np.float32), 400, "expected [N, 784]"),
        (np.zeros(784, np.float32), 400, "expected [N, 784]"),
        (np.zeros((1, 1, 784), np.float32), 400, "expected [N, 784]"),
        (np.zeros((2, 784), object), 400, "must be numbers"),
        (np.zeros((2, 784), bool), 400, "must be numbers"),
        (np.full((2, 784), np.nan, np.float32), 400, "input[0][0] is not finite"),
        (np.full((2, 784), 255, np.float32), 400, "divide 0-255 values by 255"),
    ],
)
def test_validate_batch_refusals(x: np.ndarray, status: int, fragment: str) -> None:
    with pytest.raises(ServiceError) as info:
        validate_batch(x, max_items=4)
    assert info.value.status == status and fragment in info.value.message


def test_non_array_is_400() -> None:
    with pytest.raises(BadRequest):
        validate_batch([[0.5] * 784], max_items=4)  # type: ignore[arg-type]


# --- property tests --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_only_raises_service_errors(value: object) -> None:
    try:
        out = instances_to_batch(value, max_items=8)
    except ServiceError:
        return
    assert out.shape[1] == 784  # pragma: no cover - random JSON is never a valid batch


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from([True, False, None, "1", 2, -1, 1e300, [0.5], {}]), min_size=1, max_size=3),
    st.integers(0, 783),
    st.booleans(),
)
def test_one_bad_value_anywhere_is_a_400(bads: list, position: int, nested: bool) -> None:
    row = with_value(bads[0], position)
    item = [row[i : i + 28] for i in range(0, 784, 28)] if nested else row
    with pytest.raises(BadRequest):
        instances_to_batch([ROW, item], max_items=8)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6).flatmap(lambda n: arrays(np.float32, (n, 784), elements=st.floats(0, 1, width=32))),
    st.booleans(),
)
def test_valid_batches_round_trip_exactly(x: np.ndarray, nested: bool) -> None:
    data = x.reshape(len(x), 28, 28).tolist() if nested else x.tolist()
    np.testing.assert_array_equal(instances_to_batch(orjson.loads(orjson.dumps(data)), max_items=6), x)


# --- the simdjson fast path for {"instances": [[784 numbers], ...]} -----------------------------------


def general_path(body: bytes, max_items: int = 8) -> np.ndarray:
    return instances_to_batch(orjson.loads(body)["instances"], max_items=max_items)


def test_simdjson_is_installed() -> None:
    assert tensors.simdjson is not None, "pyproject.toml installs pysimdjson; without it JSON is 3x slower"


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: arrays(np.float32, (n, 784), elements=st.floats(0, 1, width=32))))
def test_json_fast_path_gives_exactly_the_general_paths_batch(x: np.ndarray) -> None:
    body = orjson.dumps({"instances": x.tolist()})
    out = instances_from_json(body, max_items=8)
    assert out is not None and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, general_path(body))
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps({"instances": [[[0.5] * 28] * 28]}),  # 28x28 layout: the general path handles it
        orjson.dumps({"instances": [ROW], "top_k": 3}),  # another key
        orjson.dumps({"instances": [with_value(True)]}),
        orjson.dumps({"instances": [with_value("0.5")]}),
        orjson.dumps({"instances": [with_value(None)]}),
        orjson.dumps({"instances": [with_value([0.5])]}),  # one value nested, same count of numbers
        orjson.dumps({"instances": [ROW[:-1], [*ROW, 0.5]]}),  # ragged rows, same count of numbers
        orjson.dumps({"instances": []}),
        orjson.dumps({"instances": [ROW] * 9}),  # more than max_items: the general path says 413
        orjson.dumps({"instances": ROW}),
        orjson.dumps([ROW]),
        orjson.dumps({"instances": [ROW]})[:-1],  # truncated
        b'{"instances": [[' + b"NaN," * 783 + b"0]]}",
        b'{"instances": [[' + b".5," * 783 + b"0]]}",  # not JSON numbers
        b"\xff\xfe",
    ],
    ids=["28x28", "extra-key", "bool", "string", "null", "nested-value", "ragged", "empty", "too-many",
         "not-nested", "top-level-list", "truncated", "nan", "bare-fraction", "not-utf8"],
)
def test_json_fast_path_leaves_every_other_body_to_the_general_path(body: bytes) -> None:
    assert instances_from_json(body, max_items=8) is None


@pytest.mark.parametrize(("value", "fragment"), [(2, "= 2 is outside [0,1]"), (-0.5, "= -0.5 is outside"),
                                                 (1e39, "not finite")])
def test_json_fast_path_refuses_values_like_the_general_path(value: float, fragment: str) -> None:
    body = orjson.dumps({"instances": [ROW, with_value(value, 5)]})
    with pytest.raises(BadRequest) as fast:
        instances_from_json(body, max_items=8)
    with pytest.raises(BadRequest) as general:
        general_path(body)
    assert fragment in fast.value.message and fast.value.message == general.value.message


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 2000))
def test_json_fast_path_on_mangled_bodies_declines_or_agrees(junk: bytes, cut: int) -> None:
    body = orjson.dumps({"instances": [ROW, ROW]})
    mangled = body[:cut] + junk + body[cut:]
    try:
        out = instances_from_json(mangled, max_items=8)
    except BadRequest as exc:
        # The fast path may only refuse what the service's general path refuses too.
        with pytest.raises(ServiceError):
            general_path_as_served(mangled)
        assert exc.status == 400
        return
    if out is not None:
        np.testing.assert_array_equal(out, general_path_as_served(mangled))


def general_path_as_served(body: bytes, max_items: int = 8) -> np.ndarray:
    """What the JSON routes do with a body the fast path declined (service/routes/simple.py)."""
    parsed = json_body(body, max_items=max_items)  # 400 for anything that is not JSON
    if not isinstance(parsed.value, dict) or "instances" not in parsed.value:
        raise BadRequest('send {"instances": [[784 numbers], ...]}')
    return instances_to_batch(parsed.value["instances"], max_items=max_items, numbers_only=parsed.numbers_only)
