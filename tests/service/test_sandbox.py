"""Templates run in Jinja's immutable sandbox: escape attempts through real pipelines fail.

Each attempt is a real pipeline file served by a real daemon; the webhook must answer
with an error and leak nothing of Python's internals, the process or its secrets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harkd.testing import run_daemon

pytestmark = pytest.mark.anyio

ESCAPES = {
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "subclasses_loop": "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "input_globals": "{{ input.__class__.__init__.__globals__ }}",
    "cycler_os": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "lipsum_os": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "joiner_globals": "{{ joiner.__init__.__globals__ }}",
    "namespace_globals": "{{ namespace.__init__.__globals__ }}",
    "self_context": "{{ self._TemplateReference__context }}",
    "attr_filter": "{{ input | attr('__class__') | attr('__mro__') }}",
    "format_string": "{{ '{0.__class__.__mro__}'.format(input) }}",
    "format_map": "{{ '{x.__class__}'.format_map({'x': input}) }}",
    "percent_format": "{{ '%s' % input.__class__ }}",
    "mutate_input": "{{ input.items.append(4) }}",
    "mutate_vars": "{{ vars.update({'x': 1}) }}",
    "pop_input": "{{ input.pop('items') }}",
    "huge_range": "{{ range(10 ** 9) | list | length }}",
    "no_config": "{{ config.items() }}",
    "no_request": "{{ request.environ }}",
    "no_os": "{{ os.environ }}",
    "no_import": "{{ __import__('os').getcwd() }}",
    "int_class": "{{ (1).__class__.__subclasses__() }}",
    "run_internals": "{{ run.__class__.__init__.__globals__ }}",
    "trigger_internals": "{{ trigger.__class__ }}",
}
LEAKS = ("<class", "<function", "<module", "<built-in", "uid=", "__builtins__", "HARKD_")


def _pipeline(template: str) -> str:
    return ("trigger: {http: {}}\nsteps:\n"
            f"  - template: {json.dumps(template)}\n")


async def test_escape_attempts_are_refused(tmp_path: Path) -> None:
    files = {name: _pipeline(t) for name, t in ESCAPES.items()}
    async with run_daemon(tmp_path, files) as d:
        assert d.daemon.catalog.counts()["active"] == len(ESCAPES)
        for name in ESCAPES:
            async with d.http.post(d.url(f"/hooks/{name}"), json={"items": [1, 2, 3]}) as r:
                body = await r.text()
            assert r.status >= 400, (name, r.status, body)
            assert not any(leak in body for leak in LEAKS), (name, body)
            message = json.loads(body)["error"]["message"]
            assert any(word in message for word in
                       ("sandbox", "undefined", "unsafe", "range", "not safely", "no attribute",
                        "too big")), (name, message)


async def test_input_is_data_not_a_template(tmp_path: Path) -> None:
    # Text that arrives in a request is never rendered a second time.
    files = {"echo": _pipeline("hi {{ input.name }}")}
    async with run_daemon(tmp_path, files) as d:
        payload = {"name": "{{ ''.__class__.__mro__ }} {{ 7 * 7 }}"}
        async with d.http.post(d.url("/hooks/echo"), json=payload) as r:
            assert r.status == 200
            assert await r.text() == "hi {{ ''.__class__.__mro__ }} {{ 7 * 7 }}"


async def test_templates_do_not_see_the_callers_credentials(tmp_path: Path) -> None:
    token = "s3cret-bearer-token-0123456789"
    files = {"who": ("trigger:\n  http:\n    auth: {bearer: {token: " + token + "}}\n"
                     "steps:\n  - template: '{{ trigger | tojson }} {{ run | tojson }}'\n")}
    async with run_daemon(tmp_path, files) as d:
        headers = {"Authorization": f"Bearer {token}", "Cookie": "session=abc123"}
        async with d.http.post(d.url("/hooks/who"), json={}, headers=headers) as r:
            body = await r.text()
        assert r.status == 200, body
        assert token not in body
        assert "abc123" not in body
