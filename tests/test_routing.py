"""The real routing table against nlu_data/INTENTS.md; business hours; validation errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.config.routing import Route, RouteKind, RoutingTable, check_routing, load_routing
from bot.config.settings import PROJECT_ROOT
from bot.errors import ConfigError
from tests.conftest import ENERGY_PACK

ROUTING_FILE = ENERGY_PACK / "routing.yml"
INTENTS_FILE = PROJECT_ROOT / "nlu_data" / "INTENTS.md"
ROME = ZoneInfo("Europe/Rome")
_ROW_RE = re.compile(r"^\|\s*`(?P<intent>[a-z_]+)`\s*\|\s*(?P<route>[^|]+?)\s*\|")


def documented_routes() -> dict[str, Route]:
    """The intent table of INTENTS.md (the one whose second column is ``route``) as routes."""
    routes: dict[str, Route] = {}
    in_table = False
    for line in INTENTS_FILE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[:2] == ["intent", "route"]:
            in_table = True
            continue
        if not line.startswith("|"):
            if in_table:
                break
            continue
        match = _ROW_RE.match(line)
        if not in_table or match is None:
            continue
        intent, route = match["intent"], match["route"].split()
        if route == ["flow"]:
            routes[intent] = Route(RouteKind.FLOW, intent)
        elif len(route) == 2 and route[0] == "queue":
            routes[intent] = Route(RouteKind.QUEUE, route[1])
        elif route in (["reply"], ["fallback"]):
            routes[intent] = Route(RouteKind(route[0]), intent)
        else:
            raise AssertionError(f"INTENTS.md: route {match['route']!r} of {intent} is not known")
    return routes


DOCUMENTED = documented_routes()


@pytest.fixture(scope="module")
def table() -> RoutingTable:
    return load_routing(ROUTING_FILE)


def test_intents_doc_lists_eighteen_intents() -> None:
    assert len(DOCUMENTED) == 18


@pytest.mark.parametrize(("intent", "expected"), sorted(DOCUMENTED.items()))
def test_documented_intent_routes_as_in_intents_doc(
    table: RoutingTable, intent: str, expected: Route
) -> None:
    assert table.route_for(intent) == expected


@pytest.mark.parametrize("intent", [None, "order_pizza"])
def test_unknown_or_missing_intent_routes_to_fallback(
    table: RoutingTable, intent: str | None
) -> None:
    assert table.route_for(intent).kind is RouteKind.FALLBACK


def test_every_flow_has_a_defined_failure_queue(table: RoutingTable) -> None:
    flows = {r.name for r in table.intents.values() if r.kind is RouteKind.FLOW}

    assert flows <= table.flow_failure_queue.keys()
    assert set(table.flow_failure_queue.values()) <= table.queues.keys()


# business hours (2024-07-15 and 2024-01-15 are Mondays)


@pytest.mark.parametrize(
    ("local", "is_open"),
    [
        pytest.param(datetime(2024, 7, 15, 10, 0), True, id="monday-10:00"),
        pytest.param(datetime(2024, 7, 15, 7, 59), False, id="monday-07:59"),
        pytest.param(datetime(2024, 7, 15, 19, 59), True, id="monday-19:59"),
        pytest.param(datetime(2024, 7, 15, 20, 0), False, id="monday-20:00"),
        pytest.param(datetime(2024, 7, 15, 21, 0), False, id="monday-21:00"),
        pytest.param(datetime(2024, 7, 20, 10, 0), True, id="saturday-10:00"),
        pytest.param(datetime(2024, 7, 20, 14, 0), False, id="saturday-14:00"),
        pytest.param(datetime(2024, 7, 21, 10, 0), False, id="sunday-10:00"),
    ],
)
def test_billing_is_open_only_in_business_hours(
    table: RoutingTable, local: datetime, is_open: bool
) -> None:
    assert table.queue_is_open("billing", local.replace(tzinfo=ROME)) is is_open


@pytest.mark.parametrize(
    "local",
    [
        datetime(2024, 7, 15, 0, 0),
        datetime(2024, 7, 17, 3, 30),
        datetime(2024, 7, 20, 23, 59),
        datetime(2024, 7, 21, 23, 59),
        datetime(2024, 1, 14, 12, 0),
    ],
    ids=str,
)
def test_technical_is_open_at_any_hour(table: RoutingTable, local: datetime) -> None:
    assert table.queue_is_open("technical", local.replace(tzinfo=ROME))


@pytest.mark.parametrize(
    ("at_utc", "is_open"),
    [
        pytest.param(datetime(2024, 7, 15, 17, 30, tzinfo=UTC), True, id="summer-19:30-local"),
        pytest.param(datetime(2024, 1, 15, 18, 30, tzinfo=UTC), True, id="winter-19:30-local"),
        pytest.param(datetime(2024, 7, 15, 18, 30, tzinfo=UTC), False, id="summer-20:30-local"),
        pytest.param(datetime(2024, 1, 15, 19, 30, tzinfo=UTC), False, id="winter-20:30-local"),
    ],
)
def test_business_hours_follow_daylight_saving_time(
    table: RoutingTable, at_utc: datetime, is_open: bool
) -> None:
    assert table.queue_is_open("billing", at_utc) is is_open


# validation of bad files

VALID = """\
version: 1
timezone: Europe/Rome
intents:
  check_balance: {flow: check_balance}
  billing_problem: {queue: billing}
  greet: reply
flows:
  check_balance: {on_failure: billing}
queues:
  billing:
    sip_uri: "sip:billing@127.0.0.1:5070"
    hours: {mon-fri: "08:00-20:00"}
  general:
    sip_uri: "sip:general@127.0.0.1:5070"
    hours: {mon-sat: "08:00-21:00"}
"""


def write_routing(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "routing.yml"
    path.write_text(body, encoding="utf-8")
    return path


def test_valid_minimal_file_loads(tmp_path: Path) -> None:
    table = load_routing(write_routing(tmp_path, VALID))

    assert table.route_for("billing_problem") == Route(RouteKind.QUEUE, "billing")
    assert table.flow_failure_queue == {"check_balance": "billing"}


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        pytest.param(
            "billing_problem: {queue: billing}",
            "billing_problem: {queue: nowhere}",
            "intents.billing_problem",
            id="unknown-queue",
        ),
        pytest.param('mon-fri: "08:00-20:00"', 'mon-fri: "8-20"', "hours.mon-fri", id="hours-8-20"),
        pytest.param(
            'mon-fri: "08:00-20:00"', 'mon-fry: "08:00-20:00"', "hours.mon-fry", id="unknown-day"
        ),
        pytest.param(
            'mon-fri: "08:00-20:00"',
            'mon-fri: "20:00-08:00"',
            "hours.mon-fri",
            id="end-before-start",
        ),
        pytest.param(
            "check_balance: {on_failure: billing}",
            "check_balance: {}",
            "flows.check_balance.on_failure",
            id="flow-without-on-failure",
        ),
        pytest.param(
            "flows:\n  check_balance: {on_failure: billing}\n", "", "flows", id="flow-not-listed"
        ),
        pytest.param("version: 1", "version: 2", "version", id="version-2"),
        pytest.param(
            "timezone: Europe/Rome", "timezone: Europe/Atlantis", "timezone", id="unknown-timezone"
        ),
    ],
)
def test_bad_routing_file_raises_config_error_naming_the_key(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    assert old in VALID
    path = write_routing(tmp_path, VALID.replace(old, new))

    with pytest.raises(ConfigError) as caught:
        load_routing(path)

    message = str(caught.value)
    assert key in message
    assert str(path) in message


# bad entries in several queues and the time zone: (text, its replacement, the keys reported)
SEVERAL_HOURS_FAULTS = [
    ("timezone: Europe/Rome", "timezone: Europe/Atlantis", ["timezone"]),
    (
        'hours: {mon-fri: "08:00-20:00"}',
        'hours: {mon-fri: "08:00-20:00", sat: "8-13", sun: "18:00-09:00"}',
        ["queues.billing.hours.sat", "queues.billing.hours.sun"],
    ),
    (
        'hours: {mon-sat: "08:00-21:00"}',
        'hours: {mon-fry: "08:00-21:00", sat-mon: "09:00-12:00", tue: "09:60-10:00"}',
        [
            "queues.general.hours.mon-fry",
            "queues.general.hours.sat-mon",
            "queues.general.hours.tue",
        ],
    ),
]


def test_every_bad_hours_entry_of_every_queue_is_reported_with_its_key(tmp_path: Path) -> None:
    body, expected = VALID, []
    for old, new, keys in SEVERAL_HOURS_FAULTS:
        assert old in body
        body = body.replace(old, new)
        expected += keys
    path = write_routing(tmp_path, body)

    table, problems = check_routing(path)

    assert table is None
    assert sorted(p.key for p in problems) == sorted(expected)
    with pytest.raises(ConfigError) as caught:
        load_routing(path)
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert sorted(line.removeprefix(f"{path}: ").split(": ")[0] for line in lines) == sorted(
        expected
    )


def test_a_queue_with_bad_hours_is_still_a_queue_that_intents_and_flows_may_name(
    tmp_path: Path,
) -> None:
    path = write_routing(tmp_path, VALID.replace('"08:00-20:00"', '"20:00-08:00"'))

    _, problems = check_routing(path)

    assert [p.key for p in problems] == ["queues.billing.hours.mon-fri"]


@pytest.mark.parametrize(
    ("section", "value"),
    [("queues", "[billing]"), ("intents", "greet"), ("flows", "[]"), ("escalation", "3")],
)
def test_a_section_that_is_not_a_mapping_is_a_problem_not_a_crash(
    tmp_path: Path, section: str, value: str
) -> None:
    # the last of two equal keys wins in YAML: the section is replaced
    path = write_routing(tmp_path, f"{VALID}{section}: {value}\n")

    _, problems = check_routing(path)

    assert section in [p.key for p in problems]
