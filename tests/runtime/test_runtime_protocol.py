"""Request checks of the Open Inference Protocol, without a server."""

from __future__ import annotations

import orjson
import pytest
from mlctl_serve.protocol import ProtocolError, TensorSpec, parse_generate_request, parse_infer_request

SPEC_IN = TensorSpec("features", "FP32", (-1, 8))
SPEC_OUT = TensorSpec("probabilities", "FP32", (-1, 3))
ROW = [0.5] * 8


def body(**fields: object) -> bytes:
    request: dict[str, object] = {"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": ROW}]}
    request.update(fields)
    return orjson.dumps(request)


def tensor(**fields: object) -> dict[str, object]:
    item: dict[str, object] = {"name": "features", "shape": [1, 8], "datatype": "FP32", "data": ROW}
    item.update(fields)
    return item


def parse(raw: bytes, max_rows: int | None = None):  # type: ignore[no-untyped-def]
    return parse_infer_request(raw, [SPEC_IN], [SPEC_OUT], max_rows)


def test_flat_and_nested_data_are_the_same_request() -> None:
    flat = parse(body(inputs=[tensor(shape=[2, 8], data=ROW + ROW)], id="r1"))
    nested = parse(body(inputs=[tensor(shape=[2, 8], data=[ROW, ROW])]))
    assert flat.inputs["features"].data == nested.inputs["features"].data
    assert flat.inputs["features"].shape == (2, 8)
    assert flat.id == "r1"
    assert flat.outputs == ("probabilities",)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"[1, 2]", "request body must be a JSON object, got a list"),
        (body(inputs=[]), "inputs: expected a non-empty list of tensors"),
        (body(extra=1), "unknown field 'extra'; expected id, inputs, outputs, parameters"),
        (body(id=5), "id: expected a string, got 5"),
        (body(inputs=[tensor(name="x")]), "inputs[0].name: unknown input 'x'; this model takes 'features'"),
        (body(inputs=[tensor(), tensor()]), "inputs[1].name: input 'features' is given twice"),
        (body(inputs=[tensor(datatype="INT64")]), 'inputs[0].datatype: expected FP32, got "INT64"'),
        (body(inputs=[tensor(shape=[1, 7])]), "inputs[0].shape: expected [-1, 8], got [1, 7]"),
        (body(inputs=[tensor(shape=[8])]), "inputs[0].shape: expected [-1, 8], got [8]"),
        (body(inputs=[tensor(shape=[1, -8])]), "inputs[0].shape: expected a list of non-negative integers"),
        (body(inputs=[tensor(shape=[2, 8])]), "inputs[0].data: expected 16 values for shape [2, 8], got 8"),
        (body(inputs=[tensor(data=[*ROW[:7], "x"])]), 'inputs[0].data[7]: expected a number, got "x"'),
        (body(inputs=[tensor(data=[*ROW[:7], True])]), "inputs[0].data[7]: expected a number, got true"),
        (body(inputs=[tensor(data=[*ROW[:7], None])]), "inputs[0].data[7]: expected a number, got null"),
        (body(inputs=[tensor(data="abc")]), 'inputs[0].data: expected a list, got "abc"'),
        (body(outputs=[{"name": "logits"}]), 'outputs[0].name: unknown output "logits"'),
        (body(parameters=[1]), "parameters: expected an object, got a list"),
    ],
)
def test_bad_requests_name_the_field(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse(raw)
    assert caught.value.status == 400
    assert caught.value.message.startswith(message), caught.value.message


def test_more_rows_than_the_max_batch_size_are_refused() -> None:
    with pytest.raises(ProtocolError, match=r"inputs\[0\]\.shape: 3 rows exceed this server's max batch size of 2"):
        parse(body(inputs=[tensor(shape=[3, 8], data=ROW * 3)]), max_rows=2)


def test_inputs_must_agree_on_rows() -> None:
    a, b = TensorSpec("a", "FP32", (-1, 1)), TensorSpec("b", "INT64", (-1, 1))
    raw = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "shape": [2, 1], "datatype": "FP32", "data": [1.0, 2.0]},
                {"name": "b", "shape": [1, 1], "datatype": "INT64", "data": [3]},
            ]
        }
    )
    with pytest.raises(ProtocolError, match=r"every input needs the same number of rows, got \[1, 2\]"):
        parse_infer_request(raw, [a, b], [SPEC_OUT])


def test_integer_datatypes_refuse_fractions() -> None:
    spec = TensorSpec("ids", "INT64", (-1, 2))
    raw = orjson.dumps({"inputs": [{"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2.5]}]})
    with pytest.raises(ProtocolError, match=r"inputs\[0\]\.data\[1\]: expected an integer for INT64, got 2\.5"):
        parse_infer_request(raw, [spec], [SPEC_OUT])


def test_nesting_deeper_than_the_shape_and_beyond_the_parser() -> None:
    deep: list[object] = [0.5]
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ProtocolError, match=r"nested deeper than the shape's 2 dimensions"):
        parse(body(inputs=[tensor(data=deep)]))
    raw = b'{"inputs":[{"name":"features","shape":[1,8],"datatype":"FP32","data":' + b"[" * 5000 + b"]" * 5000 + b"}]}"
    with pytest.raises(ProtocolError) as caught:
        parse(raw)
    assert caught.value.status == 400


def test_tensor_specs_are_checked_when_made() -> None:
    with pytest.raises(ValueError, match="unknown datatype 'FLOAT'"):
        TensorSpec("x", "FLOAT", (-1, 2))
    with pytest.raises(ValueError, match=r"shape must be \(-1, d1, d2, \.\.\.\)"):
        TensorSpec("x", "FP32", (2, 2))


def gen(payload: object) -> object:
    return parse_generate_request(orjson.dumps(payload), max_tokens_limit=100, default_max_tokens=16)


def test_generate_request_defaults_and_stop_as_a_string() -> None:
    request = gen({"text_input": "Hi", "parameters": {"stop": "\n", "temperature": 0, "seed": 7}})
    assert (request.text, request.max_tokens, request.temperature, request.stop, request.seed) == (
        "Hi",
        16,
        0.0,
        ("\n",),
        7,
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "text_input: expected a string, got null"),
        ({"text_input": 3}, "text_input: expected a string, got 3"),
        ({"text_input": "x", "prompt": "y"}, "unknown field 'prompt'; expected id, text_input, parameters"),
        (
            {"text_input": "x", "parameters": {"max_tokens": 0}},
            "parameters.max_tokens: expected an integer from 1 to 100",
        ),
        ({"text_input": "x", "parameters": {"max_tokens": 101}}, "parameters.max_tokens: expected an integer from 1"),
        (
            {"text_input": "x", "parameters": {"temperature": -1}},
            "parameters.temperature: expected a number from 0 to 5",
        ),
        ({"text_input": "x", "parameters": {"stop": [""]}}, "parameters.stop: expected a string or a list"),
        ({"text_input": "x", "parameters": {"stop": ["a"] * 5}}, "parameters.stop: expected a string or a list"),
        ({"text_input": "x", "parameters": {"seed": -1}}, "parameters.seed: expected a non-negative integer"),
        ({"text_input": "x", "parameters": {"top_k": 3}}, "parameters.top_k: unknown; expected max_tokens"),
    ],
)
def test_bad_generate_requests_name_the_field(payload: object, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        gen(payload)
    assert caught.value.status == 400
    assert caught.value.message.startswith(message), caught.value.message


def test_mixed_nesting_and_integer_ranges() -> None:
    with pytest.raises(ProtocolError, match=r"inputs\[0\]\.data: mixes lists and values at the same level"):
        parse(body(inputs=[tensor(shape=[2, 8], data=[ROW, *ROW])]))
    spec = TensorSpec("ids", "INT8", (-1, 2))
    raw = orjson.dumps({"inputs": [{"name": "ids", "shape": [1, 2], "datatype": "INT8", "data": [1, 300]}]})
    with pytest.raises(ProtocolError, match=r"inputs\[0\]\.data\[1\]: 300 is out of range for INT8"):
        parse_infer_request(raw, [spec], [SPEC_OUT])
    flags = TensorSpec("mask", "BOOL", (-1, 2))
    raw = orjson.dumps({"inputs": [{"name": "mask", "shape": [1, 2], "datatype": "BOOL", "data": [True, 1]}]})
    with pytest.raises(ProtocolError, match=r"inputs\[0\]\.data\[1\]: expected true or false, got 1"):
        parse_infer_request(raw, [flags], [SPEC_OUT])


def test_temperatures_too_small_to_divide_by_are_greedy() -> None:
    assert gen({"text_input": "x", "parameters": {"temperature": 1e-300}}).temperature == 0.0  # type: ignore[attr-defined]
    assert gen({"text_input": "x", "parameters": {"temperature": 0.0009}}).temperature == 0.0  # type: ignore[attr-defined]
    assert gen({"text_input": "x", "parameters": {"temperature": 0.001}}).temperature == 0.001  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        ("FP32", 1e39, "inputs[0].data[1]: 1e+39 is out of range for FP32 (largest magnitude 3.40282e+38)"),
        ("FP32", -(2**62), None),
        ("FP16", 65520.0, "inputs[0].data[1]: 65520.0 is out of range for FP16 (largest magnitude 65504)"),
    ],
)
def test_floats_beyond_the_datatype_are_refused_not_made_infinite(
    datatype: str, value: float, message: str | None
) -> None:
    spec = TensorSpec("v", datatype, (-1, 2))
    if message is None:  # an integer beyond any float32: JSON allows it, orjson reads it as a float
        value, message = 1e40, "inputs[0].data[1]: 1e+40 is out of range for FP32"
        raw = b'{"inputs":[{"name":"v","shape":[1,2],"datatype":"FP32","data":[1.0,' + b"1" + b"0" * 40 + b"]}]}"
    else:
        raw = orjson.dumps({"inputs": [{"name": "v", "shape": [1, 2], "datatype": datatype, "data": [1.0, value]}]})
    with pytest.raises(ProtocolError) as caught:
        parse_infer_request(raw, [spec], [SPEC_OUT])
    assert caught.value.message.startswith(message), caught.value.message
    ok = orjson.dumps({"inputs": [{"name": "v", "shape": [1, 2], "datatype": datatype, "data": [1.0, -65504.0]}]})
    assert list(parse_infer_request(ok, [spec], [SPEC_OUT]).inputs["v"].data) == [1.0, -65504.0]
