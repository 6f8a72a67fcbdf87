"""Every kind of broken pipeline file gets its own clear message with a position."""

from __future__ import annotations

from harkd.core.loader import load_bytes
from harkd.errors import ConfigError


def errors(text: str | bytes, environ: dict[str, str] | None = None) -> list[ConfigError]:
    raw = text.encode() if isinstance(text, str) else text
    loaded = load_bytes("p.yaml", raw, environ=environ or {})
    assert loaded.pipeline is None, "expected the file to be rejected"
    assert loaded.errors
    for e in loaded.errors:
        assert e.file == "p.yaml" and e.line >= 1 and e.column >= 1
    return list(loaded.errors)


def one(text: str | bytes, environ: dict[str, str] | None = None) -> ConfigError:
    errs = errors(text, environ)
    assert len(errs) == 1, [str(e) for e in errs]
    return errs[0]


def test_valid_file_compiles() -> None:
    loaded = load_bytes("ok.yaml", b"trigger: {http: {}}\nsteps:\n  - template: hi\n")
    assert loaded.pipeline is not None and not loaded.errors
    assert loaded.pipeline.trigger.routes == ("/hooks/ok",)


def test_unknown_step_suggests_the_right_one() -> None:
    e = one("trigger: {http: {}}\nsteps:\n  - templat: hi\n")
    assert e.message == "unknown step 'templat'; did you mean 'template'?"
    assert (e.line, e.column, e.pointer) == (3, 5, "/steps/0/templat")


def test_unknown_key_in_step_suggests() -> None:
    e = one("trigger: {http: {}}\nsteps:\n  - http: {url: http://x, methd: GET}\n")
    assert "unknown key 'methd'" in e.message and "did you mean 'method'?" in e.message
    assert e.line == 3


def test_unknown_top_level_key_and_trigger() -> None:
    e = one("trigger: {http: {}}\nstep:\n  - template: hi\n")
    messages = [str(x) for x in errors("trigger: {htp: {}}\nsteps: [{template: hi}]\n")]
    assert any("unknown trigger 'htp'; did you mean 'http'?" in m for m in messages)
    assert e.message == "unknown key 'step'; did you mean 'steps'?"


def test_all_errors_of_a_file_at_once() -> None:
    errs = errors(
        "trigger: {http: {methods: [FETCH]}}\n"
        "timeout: soon\n"
        "steps:\n"
        "  - templat: hi\n"
        "  - log: {message: 3}\n"
    )
    lines = sorted(e.line for e in errs)
    assert lines == [1, 2, 4, 5], [str(e) for e in errs]


def test_wrong_types_say_what_was_expected() -> None:
    e = one("trigger: {http: {}}\nsteps: {template: hi}\n")
    assert "must be a list" in e.message
    e = one("trigger: {http: {}}\nconcurrency: {max: lots}\nsteps: [{template: hi}]\n")
    assert "must be an integer" in e.message and e.line == 2


def test_missing_trigger() -> None:
    e = one("steps:\n  - template: hi\n")
    assert "missing required key 'trigger'" in e.message


def test_two_steps_in_one_item() -> None:
    e = one("trigger: {http: {}}\nsteps:\n  - template: hi\n    log: there\n")
    assert "holds several steps" in e.message and "'-' missing" in e.message
    assert e.line == 4


def test_template_that_does_not_compile() -> None:
    e = one("trigger: {http: {}}\nsteps:\n  - template: 'hi {{ input.name '\n")
    assert "template does not compile" in e.message
    assert (e.line, e.pointer) == (3, "/steps/0/template/text")


def test_unset_environment_variable() -> None:
    e = one("trigger: {http: {auth: {bearer: {token: '${env:NOPE_TOKEN}'}}}}\n"
            "steps: [{template: hi}]\n")
    assert "NOPE_TOKEN is not set" in e.message and e.line == 1
    ok = load_bytes("p.yaml", b"trigger: {http: {}}\nsteps: [{template: '${env:X:-dflt}'}]\n",
                    environ={})
    assert ok.pipeline is not None


def test_empty_binary_and_huge_files() -> None:
    assert "file is empty" in one("").message
    assert "binary" in one(b"\x00\x01\x02").message
    assert "limited to" in one(b"# x\n" * 3_000_000).message


def test_yaml_syntax_error_in_pipeline() -> None:
    e = one("trigger: {http: {}\nsteps: []\n")
    assert e.message.startswith("YAML syntax error")


def test_when_expression_that_does_not_compile() -> None:
    e = one("trigger: {http: {}}\nsteps:\n  - template: hi\n    when: 'input.x =='\n")
    assert "template does not compile" in e.message and e.line == 4


def test_bad_pipeline_name() -> None:
    loaded = load_bytes("has space.yaml", b"trigger: {http: {}}\nsteps: [{template: hi}]\n")
    assert loaded.pipeline is None and "may hold only" in loaded.errors[0].message


def test_non_mapping_document() -> None:
    e = one("- just\n- a list\n")
    assert "must be a mapping" in e.message
