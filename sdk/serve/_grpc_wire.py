"""The few KServe v2 gRPC messages the client needs, encoded by hand (protobuf wire format).

Why by hand: ``tritonclient[grpc]`` pins protobuf < 7 and would downgrade the main install's
protobuf 7 (onnx uses it); generated ``*_pb2`` modules tie the runtime to the protoc that made
them. The messages used here are small and fixed by Triton's ``grpc_service.proto``
(https://github.com/triton-inference-server/common/blob/main/protobuf/grpc_service.proto), so
``grpcio`` with raw-bytes (de)serializers and ~100 lines of varint code do it. Field numbers
below are that file's; tests check them against a real tritonserver.
"""

from __future__ import annotations

from typing import Any

SERVICE = "/inference.GRPCInferenceService/"

# ModelInferRequest
_REQ_MODEL_NAME, _REQ_INPUTS, _REQ_OUTPUTS, _REQ_RAW_INPUTS = 1, 5, 6, 7
# InferInputTensor / InferOutputTensor: name 1, datatype 2, shape 3; requested output: name 1
# ModelInferResponse
_RESP_OUTPUTS, _RESP_RAW_OUTPUTS = 5, 6


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _len_field(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _string(field: int, s: str) -> bytes:
    return _len_field(field, s.encode())


def _read_varint(buf: bytes | memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    for _ in range(10):
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
    raise ValueError("varint longer than 10 bytes")


def parse(buf: bytes | memoryview) -> dict[int, list[Any]]:
    """One message's fields: number -> list of values (ints for varints, memoryviews for
    length-delimited fields; fixed32 / fixed64 as raw bytes)."""
    mv = memoryview(buf)
    fields: dict[int, list[Any]] = {}
    i = 0
    while i < len(mv):
        key, i = _read_varint(mv, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _read_varint(mv, i)
        elif wire == 2:
            n, i = _read_varint(mv, i)
            if i + n > len(mv):
                raise ValueError("truncated field")
            val, i = mv[i : i + n], i + n
        elif wire == 5:
            val, i = bytes(mv[i : i + 4]), i + 4
        elif wire == 1:
            val, i = bytes(mv[i : i + 8]), i + 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(field, []).append(val)
    return fields


def model_ready_request(name: str, version: str = "") -> bytes:
    return _string(1, name) + (_string(2, version) if version else b"")


def ready_flag(resp: bytes) -> bool:
    """``ServerReadyResponse`` / ``ModelReadyResponse`` / ``ServerLiveResponse``: bool field 1."""
    return bool(parse(resp).get(1, [0])[0])


def infer_request(
    model: str,
    inputs: list[tuple[str, str, list[int], bytes]],
    outputs: list[str],
) -> bytes:
    """``ModelInferRequest`` with the inputs' contents in ``raw_input_contents``."""
    msg = bytearray(_string(_REQ_MODEL_NAME, model))
    for name, dtype, shape, _ in inputs:
        packed = b"".join(_varint(d) for d in shape)
        tensor = _string(1, name) + _string(2, dtype) + _len_field(3, packed)
        msg += _len_field(_REQ_INPUTS, tensor)
    for name in outputs:
        msg += _len_field(_REQ_OUTPUTS, _string(1, name))
    for *_, data in inputs:
        msg += _len_field(_REQ_RAW_INPUTS, data)
    return bytes(msg)


def infer_response(resp: bytes) -> dict[str, tuple[str, list[int], bytes]]:
    """``ModelInferResponse`` -> {output name: (datatype, shape, raw bytes)}."""
    f = parse(resp)
    raws = [bytes(r) for r in f.get(_RESP_RAW_OUTPUTS, [])]
    out: dict[str, tuple[str, list[int], bytes]] = {}
    for k, t in enumerate(f.get(_RESP_OUTPUTS, [])):
        tf = parse(t)
        name = bytes(tf[1][0]).decode()
        dtype = bytes(tf.get(2, [b""])[0]).decode()
        shape: list[int] = []
        for v in tf.get(3, []):
            if isinstance(v, int):  # unpacked
                shape.append(v)
            else:  # packed
                j = 0
                while j < len(v):
                    d, j = _read_varint(v, j)
                    shape.append(d)
        if k >= len(raws):
            raise ValueError(f"output {name!r} came without raw contents")
        out[name] = (dtype, shape, raws[k])
    return out
