"""The pipeline model and the engine: kinds, schema, validation, loading, compiled
pipelines, and running their steps.

Below it are only values (``errors``, ``durations``, ``yamlfile``, ``templates``,
``settings``, ...) and :mod:`harkd.contracts`; the parts (router, steps, triggers, voice,
tools) and the daemon build on it. See ``docs/architecture.md``.
"""
