"""``urbanpulse senml decode``, run as the installed command in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The console script lives next to the interpreter of the virtual environment running the tests.
URBANPULSE = Path(sys.executable).with_name("urbanpulse")


def _run(stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(URBANPULSE), "senml", "decode", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_decode_prints_resolved_records_as_json_lines() -> None:
    pack = (
        b'[{"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},'
        b'{"n":"label","vs":"Machine Room"},{"n":"open","vb":false},'
        b'{"n":"nfv-reader","vd":"aGkgCg","t":-5},{"n":"e","s":10,"ut":60}]'
    )
    result = _run(pack, "--received-at", "1700000000")
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    prefix = "urn:dev:ow:10e2073a01080063:"
    assert lines == [
        {"n": f"{prefix}temp", "t": 1700000000.0, "u": "Cel", "v": 23.1},
        {"n": f"{prefix}label", "t": 1700000000.0, "vs": "Machine Room"},
        {"n": f"{prefix}open", "t": 1700000000.0, "vb": False},
        {"n": f"{prefix}nfv-reader", "t": 1699999995.0, "vd": "aGkgCg"},
        {"n": f"{prefix}e", "t": 1700000000.0, "s": 10.0, "ut": 60.0},
    ]


def test_received_at_defaults_to_now() -> None:
    before = time.time()
    result = _run(b'[{"n":"a","v":1,"t":-10}]')
    after = time.time()
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert before - 10 <= json.loads(line)["t"] <= after - 10


def test_refused_pack_exits_2_with_one_line_on_stderr() -> None:
    result = _run(
        b'[{"n":"a","v":1},{"n":"b","v":1},{"n":"c","v":1},{"n":"a b","v":1}]', "--received-at", "0"
    )
    assert result.returncode == 2
    assert result.stdout == b""
    assert result.stderr.decode().startswith("error: bad_name at record 3 (field n): ")
    assert result.stderr.count(b"\n") == 1


def test_not_json_exits_2() -> None:
    result = _run(b"not json", "--received-at", "0")
    assert result.returncode == 2
    assert result.stderr.decode().startswith("error: not_json: ")


@pytest.mark.parametrize("received_at", ["nan", "inf", "yesterday"])
def test_bad_received_at_is_a_usage_error(received_at: str) -> None:
    result = _run(b"[]", "--received-at", received_at)
    assert result.returncode == 2
    assert result.stdout == b""
    assert b"--received-at" in result.stderr


def test_senml_alone_shows_its_commands() -> None:
    # The callback keeps `decode` a subcommand (Typer would otherwise collapse the app).
    result = subprocess.run(
        [str(URBANPULSE), "senml", "--help"], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert b"Commands" in result.stdout
    assert b"decode" in result.stdout


def test_empty_pack_prints_nothing() -> None:
    result = _run(b"[]", "--received-at", "0")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
