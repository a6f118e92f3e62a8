"""What Grafana 11.6 does to a provisioning file's string values before using them, as a pure
function, so a test can say where the provisioned datasource points for a given environment
without a Grafana server.

``pkg/services/provisioning/values/values.go`` (``interpolateValue``): the value is split on
``$$`` (a literal dollar), each part goes through the settings expanders (``$__env{}``,
``$__file{}``, ``$__vault{}``: not emulated, refused here) and then Go's ``os.ExpandEnv``,
whose ``${NAME}`` takes everything up to ``}`` as the name: there is no ``${NAME:-default}``
(it reads a variable called ``NAME:-default``, which is unset, so the value becomes empty).
"""

from __future__ import annotations

from collections.abc import Mapping

_SPECIAL = set("*#$@!?-0123456789")


class ProvisioningError(ValueError):
    """A value this emulation does not cover."""


def _is_name_char(c: str) -> bool:
    return c == "_" or (c.isascii() and c.isalnum())


def _shell_name(s: str) -> tuple[str, int]:
    """Go's os.getShellName: the name after a ``$`` and how many bytes it spans."""
    if s[0] == "{":
        if len(s) > 2 and s[1] in _SPECIAL and s[2] == "}":
            return s[1], 3
        end = s.find("}", 1)
        if end == 1:
            return "", 2  # "${}": bad syntax, eaten
        if end == -1:
            return "", 1  # "${" unclosed: bad syntax, eaten
        return s[1:end], end + 1
    if s[0] in _SPECIAL:
        return s[0], 1
    i = 0
    while i < len(s) and _is_name_char(s[i]):
        i += 1
    return s[:i], i


def expand_env(s: str, environ: Mapping[str, str]) -> str:
    """Go's os.ExpandEnv: unset variables become empty."""
    out: list[str] = []
    i = j = 0
    while j < len(s):
        if s[j] == "$" and j + 1 < len(s):
            out.append(s[i:j])
            name, width = _shell_name(s[j + 1 :])
            if name == "" and width == 0:
                out.append("$")  # not followed by a name: left as is
            elif name:
                out.append(environ.get(name, ""))
            j += width
            i = j + 1
        j += 1
    out.append(s[i:])
    return "".join(out)


def interpolate_value(value: str, environ: Mapping[str, str]) -> str:
    """A provisioning string value as Grafana uses it."""
    if "$__" in value:
        raise ProvisioningError(f"settings expanders are not emulated: {value!r}")
    return "$".join(expand_env(part, environ) for part in value.split("$$"))
