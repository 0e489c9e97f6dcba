"""Open Inference Protocol V2 (REST): request checks and response bodies, without torch.

Every problem with a request becomes a ``ProtocolError`` with an HTTP status and a message that
names the field, e.g. ``inputs[0].shape: expected [-1, 8], got [2, 7]``. Bad input never reaches
the model and never produces a 500. A parsed request holds its tensors as typed arrays (``array``),
a tenth of the memory of Python numbers, ready for ``torch.frombuffer``.

Covers the inference API (``/infer``) and the generate extension (``/generate``, ``/generate_stream``)
that Triton and KServe use for text generation.
"""

from __future__ import annotations

import array
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

_NUMERIC = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
#: The datatypes a TensorSpec may name (BYTES is not batched through torch).
DATATYPES = (*sorted(_NUMERIC), "BOOL")


class Spec(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def datatype(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor of the Open Inference Protocol. The first dimension is the batch: -1."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise ValueError(f"tensor {self.name!r}: unknown datatype {self.datatype!r}; use one of {DATATYPES}")
        if not self.shape or self.shape[0] != -1 or any(d < 1 for d in self.shape[1:]):
            raise ValueError(f"tensor {self.name!r}: shape must be (-1, d1, d2, ...) with fixed d >= 1")


class InvalidInput(ValueError):
    """Raised by a model for an input it cannot take (a token id beyond its vocabulary, say).

    The model sees a batch, so the runtime retries the batch's halves until it knows which requests
    cause the error: those get a 400 with this exception's message (write it for the client), every
    other request of the batch its answer. Any other exception is a server error: a 500 that says
    only its request id, with the details in the log.
    """


class ProtocolError(Exception):
    """A request the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


#: The ``array`` typecode each datatype's values are held in. FP16 is held as float32 (array has no
#: half type) and converted by torch; BOOL as bytes of 0 and 1.
ARRAY_CODES = {
    "FP16": "f",
    "FP32": "f",
    "FP64": "d",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "BOOL": "B",
}


@dataclass(frozen=True)
class InferInput:
    name: str
    shape: tuple[int, ...]
    #: The values, flattened in row-major order, typed (see ARRAY_CODES).
    data: array.array[Any]


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: dict[str, InferInput]
    outputs: tuple[str, ...]


def error_body(message: str) -> bytes:
    """The OIP error body: ``{"error": "..."}``."""
    return orjson.dumps({"error": message})


def _is_int(value: Any) -> bool:
    return type(value) is int


def _flatten(data: list[Any], depth: int, where: str) -> list[Any]:
    """Nested lists (one level per dimension, at most ``depth`` deep) or a flat list -> a flat list.

    Flattens a level at a time with C-level concatenation: a request's values are never walked one by
    one in Python here (the type check that follows does that once, cheaply)."""
    level = data
    for _ in range(depth - 1):
        if not level or type(level[0]) is not list:
            break
        if not all(type(item) is list for item in level):
            raise ProtocolError(400, f"{where}: mixes lists and values at the same level")
        level = list(itertools.chain.from_iterable(level))
    if level and type(level[0]) is list:
        raise ProtocolError(400, f"{where}: nested deeper than the shape's {depth} dimensions")
    return level


#: The Python types each datatype's JSON values may have, and the range of the integer ones.
_INT_RANGES = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
_FLOAT_TYPES = {float, int}
#: The largest finite value of each float datatype: anything beyond would reach the model as infinity.
_FLOAT_MAX = {"FP16": 65504.0, "FP32": 3.4028234663852886e38, "FP64": 1.7976931348623157e308}


def _check_values(values: list[Any], datatype: str, where: str) -> None:
    """Every value fits the datatype; the common case costs one C-level pass (set(map(type, ...)))."""
    kinds = set(map(type, values))
    if datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        if kinds <= {int} and (not values or (min(values) >= low and max(values) <= high)):
            return
    elif datatype in _NUMERIC:
        # JSON has no NaN or infinity, and orjson refuses them: every float here is finite, but it
        # may still be too large for the datatype (1e39 in FP32 would become infinity).
        bound = _FLOAT_MAX[datatype]
        if kinds <= _FLOAT_TYPES and (not values or (max(values) <= bound and min(values) >= -bound)):
            return
    elif datatype == "BOOL":
        if kinds <= {bool}:
            return
    elif datatype == "BYTES" and kinds <= {str}:
        return
    _find_bad_value(values, datatype, where)


def _find_bad_value(values: list[Any], datatype: str, where: str) -> None:
    """The slow path, only for a request that is wrong: name the first bad value."""
    for i, value in enumerate(values):
        kind = type(value)
        if datatype in _INT_RANGES:
            if kind is float:
                raise ProtocolError(400, f"{where}.data[{i}]: expected an integer for {datatype}, got {value}")
            if kind is not int:
                raise ProtocolError(400, f"{where}.data[{i}]: expected a number, got {_show(value)}")
            low, high = _INT_RANGES[datatype]
            if not low <= value <= high:
                raise ProtocolError(400, f"{where}.data[{i}]: {_show(value)} is out of range for {datatype}")
        elif datatype in _NUMERIC:
            if kind not in _FLOAT_TYPES:
                raise ProtocolError(400, f"{where}.data[{i}]: expected a number, got {_show(value)}")
            if abs(value) > _FLOAT_MAX[datatype]:
                raise ProtocolError(
                    400,
                    f"{where}.data[{i}]: {_show(value)} is out of range for {datatype} "
                    f"(largest magnitude {_FLOAT_MAX[datatype]:g})",
                )
        elif datatype == "BOOL":
            if kind is not bool:
                raise ProtocolError(400, f"{where}.data[{i}]: expected true or false, got {_show(value)}")
        elif kind is not str:
            raise ProtocolError(400, f"{where}.data[{i}]: expected a string, got {_show(value)}")


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value[:40]}"'
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 24 else text[:20] + "..."


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _load_object(body: bytes, fields: tuple[str, ...]) -> tuple[dict[str, Any], str | None]:
    """The request's JSON object, holding only ``fields``, and its optional string ``id``."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ProtocolError(400, f"request body must be a JSON object, got {_show(payload)}")
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        raise ProtocolError(400, f"unknown field {unknown[0]!r}; expected {', '.join(fields)}")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(400, f"id: expected a string, got {_show(request_id)}")
    return payload, request_id


def parse_infer_request(
    body: bytes, inputs: Sequence[Spec], outputs: Sequence[Spec], max_rows: int | None = None
) -> InferRequest:
    """Check an infer request body against the model's input and output specs.

    Args:
        max_rows: The most rows (first dimension) one request may carry: the server's max batch size.
    """
    payload, request_id = _load_object(body, ("id", "inputs", "outputs", "parameters"))
    parameters = payload.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ProtocolError(400, f"parameters: expected an object, got {_show(parameters)}")

    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError(400, "inputs: expected a non-empty list of tensors")
    specs = {s.name: s for s in inputs}
    parsed: dict[str, InferInput] = {}
    for index, item in enumerate(raw_inputs):
        where = f"inputs[{index}]"
        if not isinstance(item, dict):
            raise ProtocolError(400, f"{where}: expected an object, got {_show(item)}")
        name = item.get("name")
        if not isinstance(name, str):
            raise ProtocolError(400, f"{where}.name: expected a string, got {_show(name)}")
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(repr(n) for n in specs)
            raise ProtocolError(400, f"{where}.name: unknown input {name!r}; this model takes {known}")
        if name in parsed:
            raise ProtocolError(400, f"{where}.name: input {name!r} is given twice")
        datatype = item.get("datatype")
        if datatype != spec.datatype:
            raise ProtocolError(400, f"{where}.datatype: expected {spec.datatype}, got {_show(datatype)}")
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise ProtocolError(400, f"{where}.shape: expected a list of non-negative integers, got {_show(shape)}")
        if len(shape) != len(spec.shape) or any(
            want != -1 and got != want for want, got in zip(spec.shape, shape, strict=False)
        ):
            raise ProtocolError(400, f"{where}.shape: expected {_shape_text(spec.shape)}, got {_shape_text(shape)}")
        if max_rows is not None and shape[0] > max_rows:
            raise ProtocolError(
                400, f"{where}.shape: {shape[0]} rows exceed this server's max batch size of {max_rows}"
            )
        data = item.get("data")
        if not isinstance(data, list):
            raise ProtocolError(400, f"{where}.data: expected a list, got {_show(data)}")
        flat = _flatten(data, len(shape), f"{where}.data")
        expected = math.prod(shape)
        if len(flat) != expected:
            raise ProtocolError(
                400, f"{where}.data: expected {expected} values for shape {_shape_text(shape)}, got {len(flat)}"
            )
        _check_values(flat, spec.datatype, where)
        parsed[name] = InferInput(name, tuple(shape), array.array(ARRAY_CODES[spec.datatype], flat))
    missing = [n for n in specs if n not in parsed]
    if missing:
        raise ProtocolError(400, f"inputs: missing input {missing[0]!r}")
    rows = {i.shape[0] for i in parsed.values()}
    if len(rows) > 1:
        raise ProtocolError(400, f"inputs: every input needs the same number of rows, got {sorted(rows)}")

    wanted: tuple[str, ...] = tuple(s.name for s in outputs)
    raw_outputs = payload.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise ProtocolError(400, f"outputs: expected a list, got {_show(raw_outputs)}")
        names = []
        known_outputs = {s.name for s in outputs}
        for index, item in enumerate(raw_outputs):
            name = item.get("name") if isinstance(item, dict) else None
            if name not in known_outputs:
                known = ", ".join(repr(n) for n in known_outputs)
                raise ProtocolError(400, f"outputs[{index}].name: unknown output {_show(name)}; this model has {known}")
            names.append(name)
        wanted = tuple(names) or wanted
    return InferRequest(request_id, parsed, wanted)


def infer_response(
    model_name: str, model_version: str, request_id: str | None, outputs: Sequence[tuple[Spec, list[int], list[Any]]]
) -> bytes:
    """The OIP infer response body."""
    body: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": [
            {"name": spec.name, "datatype": spec.datatype, "shape": shape, "data": data}
            for spec, shape, data in outputs
        ],
    }
    if request_id is not None:
        body["id"] = request_id
    return orjson.dumps(body)


def model_metadata(name: str, version: str, platform: str, inputs: Sequence[Spec], outputs: Sequence[Spec]) -> bytes:
    """The OIP model metadata body."""

    def tensor(spec: Spec) -> dict[str, Any]:
        return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}

    return orjson.dumps(
        {
            "name": name,
            "versions": [version],
            "platform": platform,
            "inputs": [tensor(s) for s in inputs],
            "outputs": [tensor(s) for s in outputs],
        }
    )


# --- generate extension ----------------------------------------------------------------------------

MAX_STOPS = 4
MAX_STOP_LENGTH = 64
#: Temperatures below this are greedy (0): the limit as the temperature goes to 0, where dividing the
#: logits by it would overflow to infinity and the sampling would fail.
MIN_TEMPERATURE = 1e-3
MAX_TEMPERATURE = 5.0


@dataclass(frozen=True)
class GenerateRequest:
    id: str | None
    text: str
    max_tokens: int
    temperature: float
    stop: tuple[str, ...]
    seed: int | None


def parse_generate_request(body: bytes, *, max_tokens_limit: int, default_max_tokens: int) -> GenerateRequest:
    """Check a generate request: ``{"text_input": "...", "parameters": {"max_tokens": 32, ...}}``."""
    payload, request_id = _load_object(body, ("id", "text_input", "parameters"))
    text = payload.get("text_input")
    if not isinstance(text, str):
        raise ProtocolError(400, f"text_input: expected a string, got {_show(text)}")
    params = payload.get("parameters", {})
    if not isinstance(params, dict):
        raise ProtocolError(400, f"parameters: expected an object, got {_show(params)}")
    unknown = sorted(set(params) - {"max_tokens", "temperature", "stop", "seed"})
    if unknown:
        raise ProtocolError(400, f"parameters.{unknown[0]}: unknown; expected max_tokens, temperature, stop, seed")
    max_tokens = params.get("max_tokens", default_max_tokens)
    if not _is_int(max_tokens) or not 1 <= max_tokens <= max_tokens_limit:
        raise ProtocolError(
            400, f"parameters.max_tokens: expected an integer from 1 to {max_tokens_limit}, got {_show(max_tokens)}"
        )
    temperature = params.get("temperature", 1.0)
    if type(temperature) not in (int, float) or not 0 <= temperature <= MAX_TEMPERATURE:
        raise ProtocolError(
            400, f"parameters.temperature: expected a number from 0 to {MAX_TEMPERATURE:g}, got {_show(temperature)}"
        )
    if temperature < MIN_TEMPERATURE:
        temperature = 0.0
    stop = params.get("stop", [])
    if isinstance(stop, str):
        stop = [stop]
    if (
        not isinstance(stop, list)
        or len(stop) > MAX_STOPS
        or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_LENGTH for s in stop)
    ):
        raise ProtocolError(
            400,
            f"parameters.stop: expected a string or a list of at most {MAX_STOPS} non-empty strings "
            f"of at most {MAX_STOP_LENGTH} characters",
        )
    seed = params.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2**63):
        raise ProtocolError(400, f"parameters.seed: expected a non-negative integer, got {_show(seed)}")
    return GenerateRequest(request_id, text, max_tokens, float(temperature), tuple(stop), seed)
