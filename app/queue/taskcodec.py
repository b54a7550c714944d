"""huey's task messages as signed JSON, so that nothing read from Redis can run code (issue 18).

huey's default serializer is pickle: whoever can write to Redis (its password sits in the app
user's env file and, on scale-out, crosses the network to the worker hosts) could push a job that
runs code the moment a worker dequeues it. Here a message is plain JSON (strings, numbers, lists,
objects: nothing is ever constructed from it but huey's own Message tuple and the datetimes and
timedeltas of its known time fields), and it carries an HMAC-SHA256 signature:

    b"sw1:" + 64 hex digits of HMAC-SHA256(key, body) + b":" + body

The signature is checked before the body is parsed at all. The key is NOT the Redis password: it is
derived from SUPABASE_SERVICE_ROLE_KEY under a label of its own (`signing_key`), a secret every
host already holds that never crosses the network from this service and that Redis never sees. So
a Redis password alone can neither run code (JSON) nor forge a check (signature). Anything that
does not verify raises UnverifiedTask; app.queue.instance drops and logs it, never runs it.

Cost: one json.dumps and one HMAC of ~200 bytes per task (the HMAC key schedule is computed once,
each signature copies it); measured next to pickle in the README (Upgrade notes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta

from huey.registry import Message

PREFIX = b"sw1:"
SIGNATURE_HEX = 64  # sha256
KEY_LABEL = b"seatwatch huey task signing v1"
PICKLE_START = b"\x80"  # protocol >= 2: what the releases before this one queued

_FIELDS = len(Message._fields)
_ETA, _EXPIRES, _EXPIRES_RESOLVED = (Message._fields.index(f) for f in ("eta", "expires",
                                                                         "expires_resolved"))
_ON_COMPLETE, _ON_ERROR, _CHORD = (Message._fields.index(f) for f in ("on_complete", "on_error",
                                                                       "chord_config"))
_ARGS, _KWARGS = Message._fields.index("args"), Message._fields.index("kwargs")
# Built once: json.dumps/loads with any option build a new encoder per call (a third of the cost).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder()


class UnverifiedTask(ValueError):
    """Bytes from the queue that are not a task this service signed; they are never run."""


def signing_key(service_role_key: str) -> bytes:
    """The task-signing key: HMAC-SHA256 of a fixed label under SUPABASE_SERVICE_ROLE_KEY.

    A label of its own, so a task signature can never double as an unsubscribe token (the site
    signs those with the raw key)."""
    return hmac.new(service_role_key.encode(), KEY_LABEL, hashlib.sha256).digest()


class TaskSerializer:
    """Drop-in for huey's Serializer (huey calls serialize/deserialize only)."""

    def __init__(self, key: bytes):
        if not key:
            raise ValueError("the task-signing key is empty")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def _sign(self, body: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(body)
        return mac.hexdigest().encode()

    def serialize(self, data) -> bytes:
        if not isinstance(data, Message):
            # Results and revocation are off (app.queue.instance), so huey stores nothing else: say so
            # loudly should that ever change, rather than invent a format for it.
            raise TypeError(f"only task messages are serialized here, not {type(data).__name__}")
        body = _ENCODER.encode(_encode(data)).encode()
        return PREFIX + self._sign(body) + b":" + body

    def deserialize(self, data) -> Message:
        if not isinstance(data, bytes):
            raise UnverifiedTask("not bytes")
        if not data.startswith(PREFIX):
            if data.startswith(PICKLE_START):
                raise UnverifiedTask("a pickled task (the format of earlier releases), not signed")
            raise UnverifiedTask("not a signed task")
        signature = data[len(PREFIX):len(PREFIX) + SIGNATURE_HEX]
        body = data[len(PREFIX) + SIGNATURE_HEX + 1:]
        if data[len(PREFIX) + SIGNATURE_HEX:len(PREFIX) + SIGNATURE_HEX + 1] != b":" or \
                not hmac.compare_digest(signature, self._sign(body)):
            raise UnverifiedTask("bad signature")
        try:
            return _decode(_DECODER.decode(body.decode()))
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            # Signed by us, so only a bug gets here: still never half-run it.
            raise UnverifiedTask(f"signed but malformed ({type(exc).__name__})") from None


def _encode(message: Message) -> list:
    fields = list(message)
    fields[_ETA] = _encode_time(message.eta)
    fields[_EXPIRES] = _encode_time(message.expires)
    fields[_EXPIRES_RESOLVED] = _encode_time(message.expires_resolved)
    fields[_ON_COMPLETE] = None if message.on_complete is None else _encode(message.on_complete)
    fields[_ON_ERROR] = None if message.on_error is None else _encode(message.on_error)
    if message.chord_config is not None:
        cid, size, idx, callback = message.chord_config
        fields[_CHORD] = [cid, size, idx, _encode(callback)]
    return fields


def _encode_time(value):
    """None and seconds as they are; a datetime or a timedelta tagged (the `expires` field takes
    all three)."""
    if isinstance(value, datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, timedelta):
        return {"td": value.total_seconds()}
    return value


def _decode(fields) -> Message:
    if not isinstance(fields, list) or len(fields) != _FIELDS:
        raise ValueError("not a message")
    fields[_ETA] = _decode_time(fields[_ETA])
    fields[_EXPIRES] = _decode_time(fields[_EXPIRES])
    fields[_EXPIRES_RESOLVED] = _decode_time(fields[_EXPIRES_RESOLVED])
    fields[_ARGS] = tuple(fields[_ARGS])  # huey's own args are a tuple
    if not isinstance(fields[_KWARGS], dict):
        raise TypeError("kwargs")
    fields[_ON_COMPLETE] = None if fields[_ON_COMPLETE] is None else _decode(fields[_ON_COMPLETE])
    fields[_ON_ERROR] = None if fields[_ON_ERROR] is None else _decode(fields[_ON_ERROR])
    if fields[_CHORD] is not None:
        cid, size, idx, callback = fields[_CHORD]
        fields[_CHORD] = (cid, size, idx, _decode(callback))
    return Message(*fields)


def _decode_time(value):
    if isinstance(value, dict):
        if "dt" in value:
            return datetime.fromisoformat(value["dt"])
        return timedelta(seconds=value["td"])
    if value is None or isinstance(value, (int, float)):
        return value
    raise TypeError("time field")


_NAME = Message._fields.index("name")


def unverified_call(data) -> tuple[str, list] | None:
    """(task name, args) of bytes in this service's message format, read WITHOUT verifying the
    signature: only to clean up after a job that was dropped unrun (free its section's marker when
    a key rotation left it unverifiable), never to run anything. None when it is not that format."""
    if not isinstance(data, bytes) or not data.startswith(PREFIX):
        return None
    try:
        fields = _DECODER.decode(data[len(PREFIX) + SIGNATURE_HEX + 1:].decode())
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(fields, list) or len(fields) != _FIELDS:
        return None
    name, args = fields[_NAME], fields[_ARGS]
    if not isinstance(name, str) or not isinstance(args, list):
        return None
    return name, args
