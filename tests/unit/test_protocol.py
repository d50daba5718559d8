"""Messages round-trip exactly and stay small."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mbe_mpi.protocol import (
    PROTOCOL_VERSION,
    GoodbyeMessage,
    ProtocolError,
    ResultMessage,
    ShutdownMessage,
    TaskError,
    TaskMessage,
    TaskSpec,
    decode,
    encode,
)


def test_task_roundtrip_and_size():
    message = TaskMessage((TaskSpec(41234, 1, (3, 17, 29), (1, 3, 17, 29, 30), attempt=2),))
    data = encode(message)
    assert decode(data) == message
    assert len(data) < 120


def test_result_roundtrip_is_bit_exact():
    rng = np.random.default_rng(7)
    gradient = rng.standard_normal((9, 3))
    hessian = rng.standard_normal((27, 27))
    message = ResultMessage(5, 2, 0.25, energy=-76.0123456789012345, gradient=gradient, hessian=hessian,
                            atomic_result_json='{"x": 1}')
    back = decode(encode(message))
    assert back.energy == message.energy
    assert back.gradient.tobytes() == gradient.tobytes() and back.gradient.shape == (9, 3)
    assert back.hessian.tobytes() == hessian.tobytes()
    assert back.atomic_result_json == '{"x": 1}'
    assert back.ok
    assert set(back.properties()) == {"energy", "gradient", "hessian"}


def test_energy_result_carries_only_energy():
    back = decode(encode(ResultMessage(1, 1, 0.1, energy=-1.5)))
    assert back.properties() == {"energy": -1.5}


def test_error_result_roundtrip():
    error = TaskError("qcengine", "SCF did not converge", "Traceback ...", '["hf", [1], [1, 2]]', 3, 1)
    back = decode(encode(ResultMessage(9, 3, 1.0, error=error)))
    assert not back.ok
    assert back.error == error
    assert back.properties() == {}


def test_shutdown_and_goodbye_roundtrip():
    assert decode(encode(ShutdownMessage())) == ShutdownMessage()
    assert decode(encode(GoodbyeMessage(3))) == GoodbyeMessage(3)


def test_version_mismatch_is_refused():
    data = pickle.dumps((PROTOCOL_VERSION + 1, 3, 0), protocol=5)
    with pytest.raises(ProtocolError, match="version"):
        decode(data)


def test_garbage_is_refused():
    with pytest.raises(ProtocolError):
        decode(b"not a message")
