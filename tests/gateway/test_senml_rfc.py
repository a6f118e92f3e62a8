"""RFC 8428's own examples (§5.1.1 to §5.1.7, and §6's CBOR example read as JSON), verbatim.

Each pack is copied from the RFC text as printed, including its indentation, and paired with the
resolved records worked out by hand from §4.5 and §4.6. Times the RFC leaves relative ("now")
resolve against RECEIVED_AT. We carry JSON only, so §6 (CBOR) is checked through its diagnostic
notation translated to JSON labels with Table 4.
"""

from __future__ import annotations

import ast
import json

import pytest

from gateway.errors import SenMLError, SenMLReason
from gateway.senml import Record, decode, encode, encode_resolved

RECEIVED_AT = 1_700_000_000.0

# §5.1.1 Single Data Point
SINGLE_DATA_POINT = """
   [
     {"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}
   ]
"""

# §5.1.2 Multiple Data Points (first example: voltage and current "now")
MULTIPLE_DATA_POINTS = """
[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
  {"n":"current","u":"A","v":1.2}
]
"""

# §5.1.2 second example: current at 18:01:16.001 UTC 2010-06-08 and each second before it.
# Verbatim, including the base name with one hex digit fewer than the other examples.
MULTIPLE_DATA_POINTS_TIMED = """
   [
     {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
      "bu":"A","bver":5,
      "n":"voltage","u":"V","v":120.1},
     {"n":"current","t":-5,"v":1.2},
     {"n":"current","t":-4,"v":1.3},
     {"n":"current","t":-3,"v":1.4},
     {"n":"current","t":-2,"v":1.5},
     {"n":"current","t":-1,"v":1.6},
     {"n":"current","v":1.7}
   ]
"""

# §5.1.2 third example: a SensML stream, printed open-ended (trailing comma, then "...").
SENSML_STREAM = """
   [
     {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
      "bu":"%RH","v":21.2},
     {"t":10,"v":21.3},
     {"t":20,"v":21.4},
     {"t":30,"v":21.4},
     {"t":40,"v":21.5},
     {"t":50,"v":21.5},
     {"t":60,"v":21.5},
     {"t":70,"v":21.6},
     {"t":80,"v":21.7},
   ...
"""

# §5.1.3 Multiple Measurements
MULTIPLE_MEASUREMENTS = """
   [
     {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
      "bu":"%RH","v":20},
     {"u":"lon","v":24.30621},
     {"u":"lat","v":60.07965},
     {"t":60,"v":20.3},
     {"u":"lon","t":60,"v":24.30622},
     {"u":"lat","t":60,"v":60.07965},
     {"t":120,"v":20.7},
     {"u":"lon","t":120,"v":24.30623},
     {"u":"lat","t":120,"v":60.07966},
     {"u":"%EL","t":150,"v":98},
     {"t":180,"v":21.2},
     {"u":"lon","t":180,"v":24.30628},
     {"u":"lat","t":180,"v":60.07967}
   ]
"""

# §5.1.4 Resolved Data: §5.1.3 in resolved form
RESOLVED_DATA = """
   [
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,
      "v":20},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,
      "v":24.30621},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,
      "v":60.07965},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,
      "v":20.3},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,
      "v":24.30622},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,
      "v":60.07965},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,
      "v":20.7},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,
      "v":24.30623},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,
      "v":60.07966},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,
      "v":98},
     {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,
      "v":21.2},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,
      "v":24.30628},
     {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,
      "v":60.07967}
   ]
"""

# §5.1.5 Multiple Data Types
MULTIPLE_DATA_TYPES = """
  [
    {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
    {"n":"label","vs":"Machine Room"},
    {"n":"open","vb":false},
    {"n":"nfv-reader","vd":"aGkgCg"}
  ]
"""

# §5.1.6 Collection of Resources
COLLECTION_OF_RESOURCES = """
   [
     {"bn":"2001:db8::2/","bt":1.320078429e+09,
      "n":"temperature","u":"Cel","v":25.2},
     {"n":"humidity","u":"%RH","v":30},
     {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
     {"n":"humidity","u":"%RH","v":67}
   ]
"""

# §5.1.7 Setting an Actuator: a thermostat, then two lights on, then two lights dimmed and off.
ACTUATOR_THERMOSTAT = """
   [
     {"bn":"urn:dev:ow:10e2073a01080063:"},
     {"n":"temp","u":"Cel","v":23.1},
     {"n":"heat","u":"/","v":1},
     {"n":"fan","u":"/","v":0}
   ]
"""

ACTUATOR_LIGHTS_ON = """
   [
     {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":1},
     {"n":"2001:db8::4","v":1}
   ]
"""

ACTUATOR_LIGHTS_OFF = """
   [
     {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":0.5},
     {"n":"2001:db8::4","v":0.5},
     {"n":"2001:db8::3","t":0.1,"v":0},
     {"n":"2001:db8::4","t":0.1,"v":0}
   ]
"""

# §6: the CBOR example of §5.1.2 in CBOR diagnostic notation, verbatim.
CBOR_DIAGNOSTIC = """
  [{-2: "urn:dev:ow:10e2073a0108006:",
    -3: 1276020076.001, -4: "A", -1: 5, 0: "voltage", 1: "V", 2: 120.1},
   {0: "current", 6: -5, 2: 1.2}, {0: "current", 6: -4, 2: 1.3},
   {0: "current", 6: -3, 2: 1.4}, {0: "current", 6: -2, 2: 1.5},
   {0: "current", 6: -1, 2: 1.6}, {0: "current", 6: 0, 2: 1.7}]
"""
# §6, Table 4
CBOR_LABELS = {
    -1: "bver",
    -2: "bn",
    -3: "bt",
    -4: "bu",
    -5: "bv",
    -6: "bs",
    0: "n",
    1: "u",
    2: "v",
    3: "vs",
    4: "vb",
    5: "s",
    6: "t",
    7: "ut",
    8: "vd",
}

OW = "urn:dev:ow:10e2073a01080063"
OW15 = "urn:dev:ow:10e2073a0108006"  # §5.1.2's second example, as printed
T0 = 1_320_067_464.0  # Mon Oct 31 13:24:24 UTC 2011
T1 = 1_320_078_429.0  # Mon Oct 31 16:27:09 UTC 2011


def _humidity_walk() -> list[Record]:
    rows = [
        (0, "%RH", 20.0),
        (0, "lon", 24.30621),
        (0, "lat", 60.07965),
        (60, "%RH", 20.3),
        (60, "lon", 24.30622),
        (60, "lat", 60.07965),
        (120, "%RH", 20.7),
        (120, "lon", 24.30623),
        (120, "lat", 60.07966),
        (150, "%EL", 98.0),
        (180, "%RH", 21.2),
        (180, "lon", 24.30628),
        (180, "lat", 60.07967),
    ]
    return [Record(OW, T0 + offset, unit, value) for offset, unit, value in rows]


EXAMPLES = [
    pytest.param(SINGLE_DATA_POINT, [Record(OW, RECEIVED_AT, "Cel", 23.1)], id="5.1.1-single"),
    pytest.param(
        MULTIPLE_DATA_POINTS,
        [
            Record(f"{OW}:voltage", RECEIVED_AT, "V", 120.1),
            Record(f"{OW}:current", RECEIVED_AT, "A", 1.2),
        ],
        id="5.1.2-multiple-now",
    ),
    pytest.param(
        MULTIPLE_DATA_POINTS_TIMED,
        [
            Record(f"{OW15}:voltage", 1276020076.001, "V", 120.1),
            Record(f"{OW15}:current", 1276020071.001, "A", 1.2),
            Record(f"{OW15}:current", 1276020072.001, "A", 1.3),
            Record(f"{OW15}:current", 1276020073.001, "A", 1.4),
            Record(f"{OW15}:current", 1276020074.001, "A", 1.5),
            Record(f"{OW15}:current", 1276020075.001, "A", 1.6),
            Record(f"{OW15}:current", 1276020076.001, "A", 1.7),
        ],
        id="5.1.2-multiple-timed-bver5",
    ),
    pytest.param(MULTIPLE_MEASUREMENTS, _humidity_walk(), id="5.1.3-multiple-measurements"),
    pytest.param(RESOLVED_DATA, _humidity_walk(), id="5.1.4-resolved"),
    pytest.param(
        MULTIPLE_DATA_TYPES,
        [
            Record(f"{OW}:temp", RECEIVED_AT, "Cel", 23.1),
            Record(f"{OW}:label", RECEIVED_AT, string_value="Machine Room"),
            Record(f"{OW}:open", RECEIVED_AT, bool_value=False),
            Record(f"{OW}:nfv-reader", RECEIVED_AT, data_value=b"hi \n"),
        ],
        id="5.1.5-data-types",
    ),
    pytest.param(
        COLLECTION_OF_RESOURCES,
        [
            Record("2001:db8::2/temperature", T1, "Cel", 25.2),
            Record("2001:db8::2/humidity", T1, "%RH", 30.0),
            Record("2001:db8::1/temperature", T1, "Cel", 12.3),
            Record("2001:db8::1/humidity", T1, "%RH", 67.0),  # bn of record 2, bt of record 0
        ],
        id="5.1.6-collection",
    ),
    pytest.param(
        ACTUATOR_THERMOSTAT,
        [  # record 0 holds only a base name: it yields no record (see gateway.senml)
            Record(f"{OW}:temp", RECEIVED_AT, "Cel", 23.1),
            Record(f"{OW}:heat", RECEIVED_AT, "/", 1.0),
            Record(f"{OW}:fan", RECEIVED_AT, "/", 0.0),
        ],
        id="5.1.7-thermostat",
    ),
    pytest.param(
        ACTUATOR_LIGHTS_ON,
        [Record("2001:db8::3", T1, "/", 1.0), Record("2001:db8::4", T1, "/", 1.0)],
        id="5.1.7-lights-on",
    ),
    pytest.param(
        ACTUATOR_LIGHTS_OFF,
        [
            Record("2001:db8::3", T1, "/", 0.5),
            Record("2001:db8::4", T1, "/", 0.5),
            Record("2001:db8::3", 1_320_078_429.1, "/", 0.0),
            Record("2001:db8::4", 1_320_078_429.1, "/", 0.0),
        ],
        id="5.1.7-lights-off",
    ),
]


@pytest.mark.parametrize(("pack", "expected"), EXAMPLES)
def test_rfc_example_resolves(pack: str, expected: list[Record]) -> None:
    assert decode(pack, RECEIVED_AT) == expected
    assert decode(pack.encode("utf-8"), RECEIVED_AT) == expected


@pytest.mark.parametrize(("pack", "expected"), EXAMPLES)
def test_rfc_example_round_trips_through_encode(pack: str, expected: list[Record]) -> None:
    assert decode(encode(expected), RECEIVED_AT) == expected
    assert decode(encode_resolved(expected), RECEIVED_AT) == expected


def test_multiple_measurements_resolve_to_the_rfc_resolved_data() -> None:
    # §5.1.4 is §5.1.3 resolved: the same records either way, and our resolved encoding of
    # §5.1.3 is §5.1.4's JSON (objects compared as JSON, so 20 equals 20.0 and order of
    # members is free).
    assert decode(MULTIPLE_MEASUREMENTS, 0.0) == decode(RESOLVED_DATA, 0.0)
    resolved = json.loads(encode_resolved(decode(MULTIPLE_MEASUREMENTS, 0.0)))
    assert resolved == json.loads(RESOLVED_DATA)
    # ... and the resolved form goes back to the same records through the compact encoder.
    assert decode(encode(decode(RESOLVED_DATA, 0.0)), 0.0) == decode(MULTIPLE_MEASUREMENTS, 0.0)


def test_sensml_stream_as_printed_is_not_a_complete_pack() -> None:
    # §5.1.2 prints the stream open-ended; cut there, it is not JSON.
    with pytest.raises(SenMLError) as caught:
        decode(SENSML_STREAM, RECEIVED_AT)
    assert caught.value.reason == SenMLReason.NOT_JSON
    assert caught.value.index is None


def test_sensml_stream_closed_where_printed() -> None:
    closed = SENSML_STREAM.replace('{"t":80,"v":21.7},\n   ...', '{"t":80,"v":21.7}]')
    values = [21.2, 21.3, 21.4, 21.4, 21.5, 21.5, 21.5, 21.6, 21.7]
    expected = [Record(OW, T0 + 10 * i, "%RH", v) for i, v in enumerate(values)]
    assert decode(closed, RECEIVED_AT) == expected


def test_cbor_example_read_as_json_equals_the_json_example() -> None:
    cbor_items = ast.literal_eval(CBOR_DIAGNOSTIC.strip())
    as_json = json.dumps([{CBOR_LABELS[k]: v for k, v in item.items()} for item in cbor_items])
    assert decode(as_json, RECEIVED_AT) == decode(MULTIPLE_DATA_POINTS_TIMED, RECEIVED_AT)
    # The only difference in content: the CBOR example writes t 0 for the last record.
    assert cbor_items[-1][6] == 0
