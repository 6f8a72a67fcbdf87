from __future__ import annotations

import subprocess
import sys

import pytest

from harkd import yamlfile
from harkd.errors import ConfigError


def test_positions_point_at_keys_and_values() -> None:
    text = "trigger:\n  http:\n    path: /x\nsteps:\n  - template: hi\n"
    data, pos = yamlfile.load("f.yaml", text)
    assert data["steps"][0]["template"] == "hi"
    assert pos.at("/trigger/http/path").line == 3
    assert pos.at("/trigger/http/path").column == 11
    assert pos.at("/trigger/http/path", key=True).column == 5
    assert pos.at("/steps/0/template").line == 5
    # unknown pointers fall back to their nearest known ancestor
    assert pos.at("/steps/0/template/nope").line == 5


def test_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        yamlfile.load("bad.yaml", "steps:\n  - template: [unclosed\n")
    err = info.value
    assert err.file == "bad.yaml"
    assert err.line == 3 or err.line == 2
    assert "YAML syntax error" in err.message
    assert str(err).startswith(f"bad.yaml:{err.line}:{err.column}: ")


def test_duplicate_keys_are_errors() -> None:
    with pytest.raises(ConfigError) as info:
        yamlfile.load("d.yaml", "a: 1\nb: 2\na: 3\n")
    assert "duplicate key 'a'" in info.value.message
    assert (info.value.line, info.value.column) == (3, 1)


@pytest.mark.parametrize("text", [
    "a: 1\nb: [1, 2.5, yes, no, null, ~, on, '3', \"x\"]\nc: {e: 0x1f, f: 1_000, g: .inf}\n",
    "1: a\ntrue: b\n~: c\n3.5: d\n",  # keys that are not strings, as PyYAML makes them
    "when: 2020-01-01\nat: 2001-12-14t21:59:43.10-05:00\nsexagesimal: 190:20:30\n",
    "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  z: 3\n",  # a merge key: PyYAML builds it
    "a: &x [1, 2]\nb: *x\n",
    "a: !!str 3\nb: !!int '7'\nc: !!float '1'\nd: !!binary aGVsbG8=\ne: !!set {x}\n",
    "- a\n- b: c\n- [d, {e: [f]}]\n",
    "just a string\n",
])
def test_data_is_what_pyyamls_constructor_makes(text: str) -> None:
    """The walk builds plain documents itself and hands the rest to PyYAML: either
    way, the same values of the same types as PyYAML's own safe loader."""
    import yaml

    data, _ = yamlfile.load("f.yaml", text)
    expected = yaml.load(text, Loader=yaml.CSafeLoader)
    assert data == expected
    assert repr(data) == repr(expected)  # True is not 1, 1.0 is not 1


def test_unknown_tags_and_unhashable_keys_are_errors_at_their_place() -> None:
    for text, message in (("a: !custom x\n", "could not determine a constructor"),
                          ("? [a, b]\n: c\n", "found unhashable key")):
        with pytest.raises(ConfigError) as info:
            yamlfile.load("f.yaml", text)
        assert message in info.value.message
        assert info.value.line == 1 and info.value.column > 1


def test_empty_document_is_none() -> None:
    assert yamlfile.load("e.yaml", "")[0] is None
    assert yamlfile.load("e.yaml", "# only a comment\n")[0] is None


def test_binary_large_and_non_utf8_files_are_refused() -> None:
    with pytest.raises(ConfigError, match="binary"):
        yamlfile.read_text("b.yaml", b"\x89PNG\x00\x01")
    with pytest.raises(ConfigError, match="limited to"):
        yamlfile.read_text("big.yaml", b"a: b\n" * (yamlfile.MAX_FILE_BYTES // 4))
    with pytest.raises(ConfigError, match="UTF-8") as info:
        yamlfile.read_text("l1.yaml", b"a: 1\nb: caf\xe9\n")
    assert info.value.line == 2


def test_alias_bomb_stops_early() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    with pytest.raises(ConfigError, match="expands to more than"):
        yamlfile.load("bomb.yaml", "\n".join(lines) + "\n")


def test_pyyaml_is_imported_without_compiling_what_harkd_never_runs() -> None:
    """PyYAML's expressions are compiled on first use, only those used, and still work:
    the pure-Python reader's check, the resolver's (a document without numbers compiles
    neither the int nor the timestamp one), the constructor's timestamp."""
    code = (
        "from harkd import yamlfile\n"
        "print(yamlfile.load('f.yaml', 'a: true')[0])\n"
        "import re, yaml\n"
        "check = yaml.reader.Reader.NON_PRINTABLE\n"
        "print(type(check).__name__, check._compiled)\n"
        "print(re.compile is yamlfile.re.compile, check.search('ok \\u00e9'),\n"
        "      check.search('a\\x01').start())\n"
        "try:\n"
        "    yaml.load('a: \"\\x01\"', Loader=yaml.SafeLoader)\n"
        "except yaml.reader.ReaderError as exc:\n"
        "    print('refused', '#x0001' in str(exc))\n"
        "res = dict(yaml.resolver.Resolver.yaml_implicit_resolvers['1'])\n"
        "num, ts = res['tag:yaml.org,2002:int'], res['tag:yaml.org,2002:timestamp']\n"
        "print(num._compiled is None, ts._compiled is None)\n"
        "print(yamlfile.load('f.yaml', 'n: 0x1f\\nt: 2024-01-02 10:00:00Z')[0])\n"
        "print(num._compiled is None, ts._compiled is None)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.splitlines() == [
        "{'a': True}", "_OnFirstUse None", "True None 1", "refused True", "True True",
        "{'n': 31, 't': datetime.datetime(2024, 1, 2, 10, 0, tzinfo=datetime.timezone.utc)}",
        "False False"], r.stderr
