import pytest

from terminals.opi.errors import ProfileError
from terminals.opi.profile import (
    DEFAULT_REQUEST_TYPES,
    OPERATION_ROOTS,
    Operation,
    TerminalProfile,
)


def test_defaults_follow_the_protocol_notes():
    profile = TerminalProfile(host="10.0.0.5")
    assert (profile.port0, profile.port1, profile.channel1_listener) == (4100, 4102, "pos")
    assert profile.encoding == "UTF-8"
    assert profile.request_type_for(Operation.AUTHORISE) == "CardPreAuthorisation"
    assert profile.request_type_for("closing") == "ReconciliationWithClosure"
    assert profile.timeout_for(Operation.AUTHORISE) >= 60
    assert profile.timeout_for(Operation.STATUS) <= 15


def test_every_operation_has_a_root_a_name_and_a_timeout():
    profile = TerminalProfile(host="h")
    for operation in Operation:
        assert OPERATION_ROOTS[operation] in ("CardServiceRequest", "ServiceRequest")
        assert profile.request_type_for(operation)
        assert profile.timeout_for(operation) > 0
    assert set(DEFAULT_REQUEST_TYPES) == set(Operation)


def test_request_type_names_can_be_overridden_and_looked_up_backwards():
    profile = TerminalProfile(host="h", request_types={"authorise": "CardPayment"})
    assert profile.request_type_for(Operation.AUTHORISE) == "CardPayment"
    assert profile.operation_for("CardPayment") is Operation.AUTHORISE
    assert profile.operation_for("CardPreAuthorisation") is None


def test_to_dict_from_dict_round_trip():
    profile = TerminalProfile(
        host="h",
        channel1_listener="terminal",
        encoding="latin-1",
        timeouts={"status": 3},
        request_types={"capture": "CardFinancialAdviceX"},
    )
    assert profile.encoding == "ISO-8859-1"
    assert TerminalProfile.from_dict(profile.to_dict()) == profile


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "host"),
        ({"host": ""}, "host"),
        ({"host": "h", "port0": 70000}, "port0"),
        ({"host": "h", "port1": "4102"}, "port1"),
        ({"host": "h", "channel1_listener": "both"}, "channel1_listener"),
        ({"host": "h", "encoding": "EBCDIC"}, "encoding"),
        ({"host": "h", "connect_timeout": 0}, "connect_timeout"),
        ({"host": "h", "timeouts": {"authorise": -1}}, "timeouts.authorise"),
        ({"host": "h", "timeouts": {"fly": 1}}, "timeouts.fly"),
        ({"host": "h", "request_types": {"capture": ""}}, "request_types.capture"),
        (
            {"host": "h", "request_types": {"capture": "CardPreAuthorisation"}},
            "request_types.authorise",
        ),
        ({"host": "h", "colour": "red"}, "colour"),
        ({"host": "h", "workstation_id": ""}, "workstation_id"),
    ],
)
def test_invalid_settings_are_refused_naming_the_field(data, field):
    with pytest.raises(ProfileError) as info:
        TerminalProfile.from_dict(data)
    assert info.value.field == field
    assert field in str(info.value)


def test_channel1_grace_and_status_request_defaults_and_round_trip():
    profile = TerminalProfile(host="h")
    assert (profile.channel1_grace_seconds, profile.status_request) == (1.0, "status")
    changed = TerminalProfile.from_dict(
        {"host": "h", "channel1_grace_seconds": 0, "status_request": "login"}
    )
    assert (changed.channel1_grace_seconds, changed.status_request) == (0.0, "login")
    assert changed.to_dict()["channel1_grace_seconds"] == 0.0
    assert changed.to_dict()["status_request"] == "login"
    assert TerminalProfile.from_dict(changed.to_dict()) == changed
    for value in ("status", "login", "none"):
        assert TerminalProfile(host="h", status_request=value).status_request == value
    assert TerminalProfile(host="h", channel1_grace_seconds=30).channel1_grace_seconds == 30.0


@pytest.mark.parametrize("value", [-0.1, 30.5, "1", True, None, float("nan"), float("inf")])
def test_channel1_grace_must_be_0_to_30_seconds(value):
    with pytest.raises(ProfileError) as info:
        TerminalProfile.from_dict({"host": "h", "channel1_grace_seconds": value})
    assert info.value.field == "channel1_grace_seconds"


@pytest.mark.parametrize("value", ["Diagnosis", "", "STATUS", None, 1])
def test_status_request_names_the_allowed_values(value):
    with pytest.raises(ProfileError) as info:
        TerminalProfile.from_dict({"host": "h", "status_request": value})
    assert info.value.field == "status_request"
    for allowed in ("'status'", "'login'", "'none'"):
        assert allowed in str(info.value)
