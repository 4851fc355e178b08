"""Unit tests of chalicelib.ingest.events: an event's identity, time, title, culprit, group and storage.

No store is needed. Spec: shared/spec/sentry-ingestion.md sections 2 and 4; the protocol notes
section 2.3 for what sentry-sdk puts in an event. Some events here are made by the real sentry-sdk,
captured through its own Transport extension point, and read back from the JSON it would send.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import os
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope as SdkEnvelope
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.transport import Transport

from chalicelib.ingest.envelopes import MAX_COMPRESSED, MAX_INFLATED, parse_store_body
from chalicelib.ingest.events import MAX_STORED_BYTES, Event, fit_for_storage, load_stored, normalize

RECEIVED = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
EVENT_ID = "89a9257b82ef44cb8054aa8cc033bfbf"
OTHER_ID = "0123456789abcdef0123456789abcdef"
HEX32 = re.compile(r"\A[0-9a-f]{32}\Z")
DSN = "http://glet_0123456789abcdef0123456789abcdef@127.0.0.1:8765/errortracking/api/v1/projects/5"


def frame(function: str, module: str, *, in_app: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "filename": module.replace(".", "/") + ".py",
        "abs_path": "/srv/app/" + module.replace(".", "/") + ".py",
        "function": function,
        "module": module,
        "lineno": 10,
        "in_app": in_app,
        **extra,
    }


APP_FRAMES = [
    frame("<module>", "__main__"),
    frame("checkout", "shop.views"),
    frame("charge", "shop.billing"),
    frame("quantize", "decimal", in_app=False),
    frame("_raise", "decimal", in_app=False),
]


def exception(exc_type: str = "ZeroDivisionError", value: str = "division by zero", **extra: Any) -> dict[str, Any]:
    return {"type": exc_type, "value": value, "stacktrace": {"frames": list(APP_FRAMES)}, **extra}


def event(*values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "event_id": EVENT_ID,
        "timestamp": "2026-11-26T11:52:38.511737Z",
        "platform": "python",
        "exception": {"values": list(values or [exception()])},
        **extra,
    }


def norm(payload: dict[str, Any], envelope_event_id: Any = None) -> Event:
    return normalize(payload, RECEIVED, envelope_event_id)


def group(payload: dict[str, Any]) -> int:
    return norm(payload).error_id


# event_id


def test_event_id_from_the_payload() -> None:
    assert norm({"event_id": EVENT_ID}).event_id == EVENT_ID


def test_event_id_from_the_payload_wins_over_the_envelope_header() -> None:
    assert norm({"event_id": EVENT_ID}, OTHER_ID).event_id == EVENT_ID


def test_event_id_from_the_envelope_header_when_the_payload_has_none() -> None:
    assert norm({"message": "hi"}, OTHER_ID).event_id == OTHER_ID


def test_event_id_from_the_envelope_header_when_the_payload_has_an_invalid_one() -> None:
    assert norm({"event_id": "not-an-id"}, OTHER_ID).event_id == OTHER_ID


@pytest.mark.parametrize(
    "given",
    [
        "89a9257b-82ef-44cb-8054-aa8cc033bfbf",
        "89A9257B-82EF-44CB-8054-AA8CC033BFBF",
        "89A9257B82EF44CB8054AA8CC033BFBF",
    ],
)
def test_event_id_dashed_and_uppercase_uuids_are_normalized(given: str) -> None:
    assert norm({"event_id": given}).event_id == EVENT_ID
    assert norm({}, given).event_id == EVENT_ID


@pytest.mark.parametrize(
    "invalid",
    [None, "", "xyz", "g" * 32, "a" * 31, "a" * 33, " " + EVENT_ID, 12345, 1.5, True, [EVENT_ID], {"id": EVENT_ID}],
)
def test_event_id_invalid_gives_a_new_id(invalid: Any) -> None:
    first = norm({"event_id": invalid}, invalid).event_id
    second = norm({"event_id": invalid}, invalid).event_id
    assert HEX32.match(first)
    assert HEX32.match(second)
    assert first != second


# timestamp


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-11-26T11:52:38.511737Z", dt.datetime(2026, 11, 26, 11, 52, 38, 511737, tzinfo=dt.UTC)),
        ("2026-11-26T11:52:38Z", dt.datetime(2026, 11, 26, 11, 52, 38, tzinfo=dt.UTC)),
        ("2026-11-26T13:52:38.5+02:00", dt.datetime(2026, 11, 26, 11, 52, 38, 500000, tzinfo=dt.UTC)),
        ("2026-11-26T06:22:38-05:30", dt.datetime(2026, 11, 26, 11, 52, 38, tzinfo=dt.UTC)),
        ("2026-11-26T11:52:38+00:00", dt.datetime(2026, 11, 26, 11, 52, 38, tzinfo=dt.UTC)),
        ("2026-11-26T11:52:38.511737", dt.datetime(2026, 11, 26, 11, 52, 38, 511737, tzinfo=dt.UTC)),
        ("2026-11-26 11:52:38", dt.datetime(2026, 11, 26, 11, 52, 38, tzinfo=dt.UTC)),
        (1700000000, dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)),
        (1700000000.25, dt.datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=dt.UTC)),
        ("1700000000", dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)),
        ("1700000000.5", dt.datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=dt.UTC)),
        (" 1700000000 ", dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)),
    ],
)
def test_timestamp_formats(given: Any, expected: dt.datetime) -> None:
    stamp = norm({"timestamp": given}).timestamp
    assert stamp == expected
    assert stamp.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        "",
        "yesterday",
        "2026-13-45T99:00:00Z",
        "2026-11-26T11:52:38Zjunk",
        "-1700000000x",
        "1e400",
        "9" * 400,
        True,
        False,
        [],
        [1700000000],
        {"seconds": 1700000000},
        1e300,
        -1e300,
        10**400,
        float("nan"),
        float("inf"),
    ],
)
def test_timestamp_garbage_is_the_time_received(garbage: Any) -> None:
    assert norm({"timestamp": garbage}).timestamp == RECEIVED


def test_timestamp_absent_is_the_time_received() -> None:
    assert norm({}).timestamp == RECEIVED


# exception events: title, type, culprit


def test_exception_event_title_type_and_message() -> None:
    normalized = norm(event())
    assert normalized.title == "ZeroDivisionError: division by zero"
    assert normalized.type == "error"
    assert normalized.message == "division by zero"
    assert normalized.level == "error"
    assert normalized.platform == "python"


def test_exception_without_value_is_titled_by_its_type() -> None:
    assert norm(event({"type": "KeyboardInterrupt"})).title == "KeyboardInterrupt"


def test_exception_event_keeps_the_sdk_level_environment_and_release() -> None:
    normalized = norm(event(level="fatal", environment="staging", release="myapp@1.2.3"))
    assert (normalized.level, normalized.environment, normalized.release) == ("fatal", "staging", "myapp@1.2.3")


def test_culprit_is_the_transaction_when_present() -> None:
    assert norm(event(transaction="/checkout/{cart_id}")).culprit == "/checkout/{cart_id}"


def test_culprit_is_the_deepest_in_app_frame() -> None:
    # The library frames after it (in_app false) are where it blew up, not whose fault it is.
    assert norm(event()).culprit == "charge(shop.billing)"


def test_culprit_is_the_last_frame_when_no_frame_is_in_app() -> None:
    frames = [frame("main", "runner", in_app=False), frame("_raise", "decimal", in_app=False)]
    payload = event({"type": "InvalidOperation", "value": "x", "stacktrace": {"frames": frames}})
    assert norm(payload).culprit == "_raise(decimal)"


def test_culprit_with_in_app_unset_is_the_last_frame() -> None:
    frames = [{"function": "main", "module": "runner"}, {"function": "boom", "module": "lib"}]
    assert norm(event({"type": "E", "stacktrace": {"frames": frames}})).culprit == "boom(lib)"


def test_culprit_of_an_event_without_frames_is_empty() -> None:
    assert norm(event({"type": "E", "value": "v"})).culprit == ""


def test_culprit_comes_from_the_raised_exceptions_frames() -> None:
    cause = exception("KeyError", "'sku'", stacktrace={"frames": [frame("lookup", "shop.catalog")]})
    raised = exception("RuntimeError", "checkout failed", stacktrace={"frames": [frame("checkout", "shop.views")]})
    assert norm(event(cause, raised)).culprit == "checkout(shop.views)"


# grouping


def test_same_error_twice_is_one_group() -> None:
    first = event()
    second = event(event_id=OTHER_ID, timestamp="2026-11-27T00:00:00Z", environment="production")
    assert group(first) == group(second)


def test_chained_exceptions_group_and_title_by_the_raised_one() -> None:
    chained = event(exception("KeyError", "'sku'"), exception("RuntimeError", "checkout failed"))
    normalized = norm(chained)
    assert normalized.title == "RuntimeError: checkout failed"
    assert normalized.error_id == group(event(exception("RuntimeError", "checkout failed")))
    assert normalized.error_id != group(event(exception("KeyError", "'sku'")))


def test_chained_exceptions_with_a_different_cause_share_the_group_of_what_was_raised() -> None:
    by_key_error = event(exception("KeyError", "'sku'"), exception("RuntimeError", "checkout failed"))
    by_timeout = event(exception("TimeoutError", "db"), exception("RuntimeError", "checkout failed"))
    assert group(by_key_error) == group(by_timeout)


def test_go_style_bare_exception_array() -> None:
    values = [exception("*errors.errorString", "cause"), exception("*url.Error", "Get http://x: refused")]
    bare = {"event_id": EVENT_ID, "platform": "go", "exception": values}
    wrapped = {"event_id": EVENT_ID, "platform": "go", "exception": {"values": values}}
    assert norm(bare).title == "*url.Error: Get http://x: refused"
    assert norm(bare).type == "error"
    assert norm(bare).culprit == "charge(shop.billing)"
    assert group(bare) == group(wrapped)


def test_object_ids_in_the_value_do_not_split_groups() -> None:
    first = event(exception("ValueError", "bad input <shop.models.Cart object at 0x7f3a2c1d9e80>"))
    second = event(exception("ValueError", "bad input <shop.models.Cart object at 0x7f0011223344>"))
    assert group(first) == group(second)


def test_different_exception_types_are_different_groups() -> None:
    assert group(event(exception("ValueError", "x"))) != group(event(exception("TypeError", "x")))


def test_different_culprits_are_different_groups() -> None:
    assert group(event(transaction="/a")) != group(event(transaction="/b"))
    other_frames = [frame("refund", "shop.billing")]
    assert group(event()) != group(event(exception(stacktrace={"frames": other_frames})))


def test_different_platforms_are_different_groups() -> None:
    assert group(event(platform="python")) != group(event(platform="javascript"))


# message-only events


def test_logentry_groups_by_template() -> None:
    bob = {
        "logentry": {"message": "user %s failed to log in", "params": ["bob"], "formatted": "user bob failed to log in"}
    }
    alice = {
        "logentry": {
            "message": "user %s failed to log in",
            "params": ["alice"],
            "formatted": "user alice failed to log in",
        }
    }
    assert norm(bob).title == "user bob failed to log in"
    assert norm(alice).title == "user alice failed to log in"
    assert norm(bob).type == "default"
    assert norm(bob).message == "user bob failed to log in"
    assert group(bob) == group(alice)


def test_logentry_different_templates_are_different_groups() -> None:
    first = {"logentry": {"message": "user %s failed to log in", "formatted": "user bob failed to log in"}}
    second = {"logentry": {"message": "user %s logged out", "formatted": "user bob logged out"}}
    assert group(first) != group(second)


def test_logentry_without_formatted_uses_the_template() -> None:
    normalized = norm({"logentry": {"message": "cache warmed"}})
    assert normalized.title == "cache warmed"
    assert normalized.type == "default"


def test_plain_string_message() -> None:
    normalized = norm({"message": "Disk almost full", "level": "warning"})
    assert normalized.title == "Disk almost full"
    assert normalized.message == "Disk almost full"
    assert normalized.type == "default"
    assert normalized.level == "warning"
    assert group({"message": "Disk almost full"}) == normalized.error_id
    assert group({"message": "Disk completely full"}) != normalized.error_id


def test_message_dict_groups_by_template() -> None:
    first = {"message": {"message": "order %s shipped", "formatted": "order 1 shipped"}}
    second = {"message": {"message": "order %s shipped", "formatted": "order 2 shipped"}}
    assert norm(first).title == "order 1 shipped"
    assert group(first) == group(second)


def test_message_dict_with_formatted_only() -> None:
    assert norm({"message": {"formatted": "only formatted"}}).title == "only formatted"


def test_multiline_message_is_titled_by_its_first_line() -> None:
    normalized = norm({"message": "Import failed\nrow 3: bad date\nrow 9: bad sku"})
    assert normalized.title == "Import failed"
    assert "row 9" in normalized.message


def test_message_and_exception_with_the_same_text_are_different_groups() -> None:
    assert group({"message": "ValueError"}) != group(event(exception("ValueError", "")))


def test_exception_event_with_a_message_is_still_an_exception() -> None:
    normalized = norm(event(message="while charging"))
    assert normalized.type == "error"
    assert normalized.title == "ZeroDivisionError: division by zero"


# fingerprint


def test_custom_fingerprint_groups_different_exceptions_together() -> None:
    first = event(exception("ValueError", "x"), fingerprint=["custom"])
    second = event(exception("TypeError", "y"), transaction="/other", fingerprint=["custom"])
    assert group(first) == group(second)
    assert group(first) != group(event(exception("ValueError", "x")))


def test_custom_fingerprint_splits_one_error_in_two() -> None:
    assert group(event(fingerprint=["tenant-a"])) != group(event(fingerprint=["tenant-b"]))


def test_default_fingerprint_alone_is_the_default_grouping() -> None:
    assert group(event(fingerprint=["{{ default }}"])) == group(event())
    assert group(event(fingerprint=["{{default}}"])) == group(event())


def test_default_fingerprint_with_an_extra_part() -> None:
    spaced = group(event(fingerprint=["{{ default }}", "x"]))
    compact = group(event(fingerprint=["{{default}}", "x"]))
    assert spaced == compact
    assert spaced != group(event())
    assert spaced != group(event(fingerprint=["x"]))
    assert spaced != group(event(fingerprint=["{{ default }}", "y"]))
    # The default part still tells different errors apart.
    assert spaced != group(event(exception("TypeError", "z"), fingerprint=["{{ default }}", "x"]))


def test_default_fingerprint_on_a_message_event() -> None:
    payload = {"message": "Disk almost full"}
    assert group({**payload, "fingerprint": ["{{ default }}"]}) == group(payload)
    assert group({**payload, "fingerprint": ["{{ default }}", "host-1"]}) != group(payload)


@pytest.mark.parametrize("fingerprint", [None, [], "custom", {"a": 1}, [{"a": 1}], [["nested"]], [None]])
def test_malformed_fingerprint_is_ignored(fingerprint: Any) -> None:
    assert group(event(fingerprint=fingerprint)) == group(event())


# error ids


def test_error_ids_are_positive_and_exact_in_javascript() -> None:
    rng = random.Random(1)
    payloads: list[dict[str, Any]] = [event(exception(f"Error{rng.random()}", "v")) for _ in range(200)]
    payloads += [{"message": f"message {i}"} for i in range(200)]
    payloads += [event(fingerprint=[str(i)]) for i in range(200)]
    ids = [group(p) for p in payloads]
    assert all(isinstance(i, int) and 0 < i < 2**53 for i in ids)
    assert len(set(ids)) == len(ids)


def test_error_ids_are_stable() -> None:
    # The same error must land in the same group tomorrow, in another process.
    assert group(event()) == group(json.loads(json.dumps(event())))


# user


@pytest.mark.parametrize(
    "user",
    [{"id": "42"}, {"id": 42}, {"email": "ada@example.com"}, {"id": "42", "email": "ada@example.com", "name": "Ada"}],
)
def test_user_digest_present(user: dict[str, Any]) -> None:
    digest = norm({"message": "hi", "user": user}).user
    assert isinstance(digest, str)
    assert digest
    assert "ada@example.com" not in digest


def test_user_digest_tells_users_apart() -> None:
    def digest(user: dict[str, Any]) -> str | None:
        return norm({"message": "hi", "user": user}).user

    assert digest({"id": "42"}) == digest({"id": "42", "email": "whatever@example.com"})
    assert digest({"id": "42"}) != digest({"id": "43"})
    assert digest({"email": "ada@example.com"}) != digest({"email": "bob@example.com"})


@pytest.mark.parametrize(
    "user",
    [None, {}, {"id": ""}, {"id": None}, {"email": "  "}, {"id": {"nested": 1}}, {"name": "Ada"}, "ada", ["42"], 42],
)
def test_user_digest_absent(user: Any) -> None:
    payload: dict[str, Any] = {"message": "hi"}
    if user is not None:
        payload["user"] = user
    assert norm(payload).user is None


# hostile payloads


HOSTILE: list[dict[str, Any]] = [
    {},
    {"exception": "ZeroDivisionError: division by zero"},
    {"exception": 42},
    {"exception": None},
    {"exception": {"values": {"type": "ValueError"}}},
    {"exception": {"values": "ValueError"}},
    {"exception": {"values": [None, 1, "x", []]}},
    {"exception": {"values": []}},
    {"exception": []},
    {"exception": [{"type": None, "value": None}]},
    {"exception": {"values": [{"type": {"a": 1}, "value": ["v"], "stacktrace": "frames"}]}},
    {"exception": {"values": [{"type": "E", "stacktrace": {"frames": "frame1\nframe2"}}]}},
    {"exception": {"values": [{"type": "E", "stacktrace": [{"function": "f"}]}]}},
    {"exception": {"values": [{"type": "E", "stacktrace": {"frames": [None, 3, "f", [], {}]}}]}},
    {
        "exception": {
            "values": [
                {
                    "type": 123,
                    "value": 4.5,
                    "stacktrace": {"frames": [{"function": 7, "module": ["m"], "in_app": "yes", "vars": "x"}]},
                }
            ]
        }
    },
    {"message": 42},
    {"message": None},
    {"message": ["a", "b"]},
    {"message": {"message": 42, "formatted": ["x"]}},
    {"message": {}},
    {"message": "   \n\t "},
    {"logentry": "just a string"},
    {"logentry": {"message": None, "params": "x"}},
    {"logentry": 42, "message": {"formatted": None}},
    {"stacktrace": {"frames": [{"function": "f", "module": "m"}]}},
    {"stacktrace": "frames"},
    {"transaction": ["a"], "platform": {"p": 1}, "level": 7, "environment": [], "release": {}},
    {"transaction": 0, "platform": 0, "level": False, "environment": True, "release": 1.5},
    {"fingerprint": "{{ default }}"},
    {"fingerprint": [1, 2.5, True]},
    {"fingerprint": [{"x": 1}, None]},
    {"user": "ada", "timestamp": {"t": 1}, "event_id": ["x"]},
    {"user": {"id": ["42"], "email": {"e": 1}, "username": 0, "ip_address": False}},
    {"threads": "x", "breadcrumbs": 5, "contexts": []},
    {"exception": {"values": [{"type": "E" * 100_000, "value": "v" * 100_000}]}, "transaction": "t" * 100_000},
    {"message": "m" * 100_000},
    {"message": "\x00\x01\x02 control characters \u2028 and \ufeff"},
]


# JSON may carry lone surrogates ("\ud800" escapes are valid JSON): they reach us as Python strings
# that UTF-8 cannot encode.
LONE_SURROGATES: list[dict[str, Any]] = [
    json.loads(r'{"exception":{"values":[{"type":"Bad\ud800","value":"\udfff"}]}}'),
    json.loads(r'{"message":"hi \ud800"}'),
    json.loads(r'{"logentry":{"message":"t \udc00 %s","formatted":"t \udc00 x"}}'),
    json.loads(r'{"message":"hi","user":{"id":"\ud800"}}'),
    json.loads(r'{"message":"hi","fingerprint":["\ud800"]}'),
    json.loads(r'{"exception":[{"type":"E"}],"transaction":"\ud800","platform":"\udfff"}'),
]


@pytest.mark.parametrize("payload", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_payloads_never_raise(payload: dict[str, Any]) -> None:
    _check_normalizes_and_stores(payload)


@pytest.mark.parametrize("payload", LONE_SURROGATES, ids=[f"surrogate{i}" for i in range(len(LONE_SURROGATES))])
def test_lone_surrogates_never_raise(payload: dict[str, Any]) -> None:
    _check_normalizes_and_stores(payload)


def _check_normalizes_and_stores(payload: dict[str, Any]) -> None:
    normalized = normalize(payload, RECEIVED, None)
    assert HEX32.match(normalized.event_id)
    assert normalized.timestamp.utcoffset() == dt.timedelta(0)
    assert 0 < normalized.error_id < 2**53
    assert normalized.type in ("error", "default")
    assert isinstance(normalized.title, str)
    assert normalized.title
    assert len(normalized.title) <= 255
    assert len(normalized.culprit) <= 255
    assert len(normalized.message) <= 1024
    assert isinstance(normalized.platform, str)
    assert isinstance(normalized.level, str)
    stored, _ = fit_for_storage(payload)
    assert len(stored) <= MAX_STORED_BYTES
    assert isinstance(load_stored(stored), dict)


def test_hostile_payload_shapes_that_still_say_something() -> None:
    # Numbers where strings belong are still shown, not dropped.
    title = norm({"exception": {"values": [{"type": 123, "value": 4.5}]}}).title
    assert "123" in title
    assert "4.5" in title


def test_hostile_payloads_read_from_the_store_body_never_raise() -> None:
    # What the legacy /store/ endpoint hands to normalize, bytes first.
    body = b'{"exception":{"values":[{"type":"\\ud83d","value":"\\ude00"}]},"message":"\\ud800"}'
    normalized = normalize(parse_store_body(body), RECEIVED, None)
    assert 0 < normalized.error_id < 2**53


# fit_for_storage


def _noise(n_bytes: int) -> str:
    """Incompressible text: random bytes as hex compress to about half their length."""
    return os.urandom(n_bytes).hex()


def _frames_of(stored: dict[str, Any]) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    for value in stored["exception"]["values"]:
        frames += value["stacktrace"]["frames"]
    return frames


BREADCRUMBS = {
    "values": [
        {"timestamp": f"2026-11-26T11:52:3{i}.0Z", "category": "http", "message": f"GET /cart/{i}", "level": "info"}
        for i in range(10)
    ]
}


def test_small_event_is_stored_whole() -> None:
    payload = event(breadcrumbs=BREADCRUMBS, contexts={"runtime": {"name": "CPython"}}, extra={"a": [1, 2]})
    stored, trimmed = fit_for_storage(payload)
    assert trimmed is False
    assert len(stored) <= MAX_STORED_BYTES
    assert load_stored(stored) == payload
    assert "_trimmed" not in load_stored(stored)


def test_fit_for_storage_does_not_change_the_payload_it_is_given() -> None:
    payload = event(exception(stacktrace={"frames": [frame("f", "m", vars={"blob": _noise(400_000)})]}))
    before = json.dumps(payload, sort_keys=True)
    fit_for_storage(payload)
    assert json.dumps(payload, sort_keys=True) == before


def test_huge_frame_vars_are_dropped_and_breadcrumbs_kept() -> None:
    frames = [frame("checkout", "shop.views", vars={"cart": _noise(200_000)}), frame("charge", "shop.billing")]
    frames[1]["vars"] = {"amount": _noise(200_000)}
    payload = event(
        exception(stacktrace={"frames": frames}),
        breadcrumbs=BREADCRUMBS,
        release="myapp@1.2.3",
        contexts={"runtime": {"name": "CPython"}},
    )
    stored, trimmed = fit_for_storage(payload)
    kept = load_stored(stored)
    assert trimmed is True
    assert len(stored) <= MAX_STORED_BYTES
    assert kept["_trimmed"] is True
    assert all("vars" not in f for f in _frames_of(kept))
    assert [f["function"] for f in _frames_of(kept)] == ["checkout", "charge"]
    assert kept["breadcrumbs"] == BREADCRUMBS
    assert kept["contexts"] == {"runtime": {"name": "CPython"}}
    assert kept["release"] == "myapp@1.2.3"
    assert kept["exception"]["values"][0]["type"] == "ZeroDivisionError"
    assert kept["event_id"] == EVENT_ID


def test_huge_vars_and_huge_breadcrumbs_are_both_dropped() -> None:
    frames = [frame("charge", "shop.billing", vars={"blob": _noise(300_000)})]
    crumbs = {"values": [{"category": "query", "message": _noise(1000)} for _ in range(400)]}
    payload = event(
        exception(stacktrace={"frames": frames}),
        breadcrumbs=crumbs,
        environment="staging",
        contexts={"runtime": {"name": "CPython"}},
    )
    stored, trimmed = fit_for_storage(payload)
    kept = load_stored(stored)
    assert trimmed is True
    assert len(stored) <= MAX_STORED_BYTES
    assert kept["_trimmed"] is True
    assert "breadcrumbs" not in kept
    assert all("vars" not in f for f in _frames_of(kept))
    assert kept["exception"]["values"][0]["type"] == "ZeroDivisionError"
    assert kept["environment"] == "staging"
    assert kept["contexts"] == {"runtime": {"name": "CPython"}}


def test_huge_extras_go_after_vars_and_breadcrumbs() -> None:
    payload = event(
        breadcrumbs={"values": [{"message": _noise(200_000)}]},
        modules={"pkg": _noise(200_000)},
        extra={"blob": _noise(200_000)},
    )
    stored, trimmed = fit_for_storage(payload)
    kept = load_stored(stored)
    assert trimmed is True
    assert len(stored) <= MAX_STORED_BYTES
    assert "modules" not in kept
    assert "extra" not in kept
    assert kept["exception"]["values"][0]["value"] == "division by zero"


def test_huge_exception_value_still_fits() -> None:
    huge = _noise(400_000)
    payload = event(exception("ValueError", huge), transaction="/checkout", breadcrumbs=BREADCRUMBS)
    stored, trimmed = fit_for_storage(payload)
    kept = load_stored(stored)
    assert trimmed is True
    assert len(stored) <= MAX_STORED_BYTES
    assert kept["_trimmed"] is True
    (value,) = kept["exception"]["values"]
    assert value["type"] == "ValueError"
    assert huge.startswith(value["value"])
    assert value["value"]
    assert kept["event_id"] == EVENT_ID
    assert kept["transaction"] == "/checkout"
    # What remains still names the error and the place it happened.
    assert norm(kept).title.startswith("ValueError: ")
    assert norm(kept).culprit == "/checkout"
    assert [f["function"] for f in _frames_of(kept)] == [f["function"] for f in APP_FRAMES]


def test_huge_message_still_fits() -> None:
    payload = {"event_id": EVENT_ID, "message": _noise(400_000), "extra": {"a": 1}}
    stored, trimmed = fit_for_storage(payload)
    assert trimmed is True
    assert len(stored) <= MAX_STORED_BYTES
    assert load_stored(stored)["message"]


def test_many_huge_exceptions_still_fit() -> None:
    values = [exception(f"Error{i}", _noise(40_000)) for i in range(30)]
    stored, trimmed = fit_for_storage(event(*values))
    assert trimmed is True
    assert len(stored) <= MAX_STORED_BYTES
    # The raised exception (the last) survives.
    assert load_stored(stored)["exception"]["values"][-1]["type"] == "Error29"


def _dense_text(rng: random.Random, n: int) -> str:
    """Random CJK characters: about 14 bits each, so even the essentials of an event are big."""
    return "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(n))


def test_essentials_of_a_submittable_event_still_fit() -> None:
    # Every field the last resort keeps, at the length it keeps, full of entropy: 5 exceptions,
    # 50 frames each. The envelope carrying it is under the 1 MB compressed / 20 MB inflated limits,
    # so ingestion accepts it and must store it.
    rng = random.Random(7)
    text_fields = ("filename", "abs_path", "function", "module", "context_line")

    def dense_frame() -> dict[str, Any]:
        return {**{k: _dense_text(rng, 255) for k in text_fields}, "lineno": 1, "in_app": True}

    values = [
        {
            "type": _dense_text(rng, 255),
            "value": _dense_text(rng, 1024),
            "stacktrace": {"frames": [dense_frame() for _ in range(50)]},
        }
        for _ in range(5)
    ]
    payload = {"event_id": EVENT_ID, "exception": {"values": values}}
    wire = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    assert len(wire) <= MAX_INFLATED
    assert len(gzip.compress(wire)) <= MAX_COMPRESSED

    stored, trimmed = fit_for_storage(payload)
    size = len(stored)
    assert trimmed is True
    assert size <= MAX_STORED_BYTES, f"stored {size} bytes, more than {MAX_STORED_BYTES}"


@pytest.mark.parametrize(
    "make",
    [
        lambda: event(),
        lambda: {"message": _noise(600_000)},
        lambda: event(exception("E", _noise(600_000))),
        lambda: event(
            exception(stacktrace={"frames": [frame("f", "m", context_line=_noise(300)) for _ in range(3000)]})
        ),
        lambda: event(threads={"values": [{"stacktrace": {"frames": [frame("f", "m", vars={"v": _noise(400_000)})]}}]}),
        lambda: event(request={"data": _noise(400_000)}, tags={"t": _noise(400_000)}),
        lambda: {"fingerprint": [_noise(100) for _ in range(5000)], "message": "x"},
    ],
    ids=["small", "message", "value", "many-frames", "thread-vars", "request-and-tags", "fingerprint"],
)
def test_result_always_fits(make: Callable[[], dict[str, Any]]) -> None:
    payload = make()
    stored, trimmed = fit_for_storage(payload)
    assert len(stored) <= MAX_STORED_BYTES
    kept = load_stored(stored)
    assert kept.get("_trimmed", False) is trimmed


# Events made by the real sentry-sdk


class _Capture(Transport):
    """sentry-sdk's own extension point: receives each envelope the SDK would send."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: SdkEnvelope) -> None:
        for item in envelope.items:
            if item.type == "event":
                self.events.append(json.loads(item.get_bytes()))


@pytest.fixture
def sdk() -> Iterator[_Capture]:
    capture = _Capture()
    client = sentry_sdk.Client(
        dsn=DSN,
        transport=capture,
        default_integrations=False,
        integrations=[LoggingIntegration(level=None, event_level=logging.ERROR)],
    )
    with sentry_sdk.isolation_scope() as scope:
        scope.set_client(client)
        yield capture
    client.close()


class Cart:
    pass


def _charge(amount: int) -> float:
    return amount / 0


def _checkout(cart: Cart) -> None:
    try:
        _charge(10)
    except ZeroDivisionError as exc:
        raise RuntimeError(f"payment failed for {cart!r}") from exc


def test_sdk_chained_exception(sdk: _Capture) -> None:
    carts = [Cart(), Cart()]  # both alive, so their object ids differ
    for cart in carts:
        try:
            _checkout(cart)
        except RuntimeError:
            sentry_sdk.capture_exception()
    first, second = sdk.events
    assert [v["type"] for v in first["exception"]["values"]] == ["ZeroDivisionError", "RuntimeError"]
    normalized = norm(first)
    assert normalized.title.startswith(f"RuntimeError: payment failed for <{__name__}.Cart object at 0x")
    assert normalized.type == "error"
    assert normalized.event_id == first["event_id"]
    assert normalized.timestamp != RECEIVED
    assert abs(normalized.timestamp - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    # The raised exception's deepest frame of ours: _checkout, in this module.
    assert normalized.culprit == f"_checkout({__name__})"
    # Two carts, two object ids, one error.
    assert norm(second).error_id == normalized.error_id
    assert norm(second).title != normalized.title


def test_sdk_logging_events_group_by_template(sdk: _Capture) -> None:
    logger = logging.getLogger("shop.auth")
    logger.error("user %s failed to log in", "bob")
    logger.error("user %s failed to log in", "alice")
    logger.error("token %s expired", "t1")
    bob, alice, token = sdk.events
    assert bob["logentry"]["message"] == "user %s failed to log in"
    assert norm(bob).title == "user bob failed to log in"
    assert norm(alice).title == "user alice failed to log in"
    assert norm(bob).error_id == norm(alice).error_id
    assert norm(token).error_id != norm(bob).error_id


def test_sdk_capture_message(sdk: _Capture) -> None:
    sentry_sdk.capture_message("Disk almost full")
    sentry_sdk.capture_message("Disk almost full", level="warning")
    first, second = sdk.events
    assert norm(first).title == "Disk almost full"
    assert norm(first).type == "default"
    assert norm(second).level == "warning"
    assert norm(first).error_id == norm(second).error_id


def test_sdk_fingerprint(sdk: _Capture) -> None:
    for error in (ValueError("a"), KeyError("b")):
        with sentry_sdk.new_scope() as scope:
            scope.fingerprint = ["payments-outage"]
            try:
                raise error
            except Exception:
                sentry_sdk.capture_exception()
    first, second = sdk.events
    assert first["fingerprint"] == ["payments-outage"]
    assert norm(first).error_id == norm(second).error_id


def test_sdk_event_with_user_and_a_huge_local(sdk: _Capture) -> None:
    sentry_sdk.set_user({"id": "42", "email": "ada@example.com"})
    blob = _noise(200_000)  # a local the SDK captures (trimmed by its own serializer)
    try:
        raise ValueError(f"bad {len(blob)}")
    except ValueError:
        sentry_sdk.capture_exception()
    (payload,) = sdk.events
    assert norm(payload).user == norm({"user": {"id": "42"}}).user
    stored, _ = fit_for_storage(payload)
    assert len(stored) <= MAX_STORED_BYTES
    assert load_stored(stored)["exception"]["values"][-1]["type"] == "ValueError"
