"""The plugin API: what a plugin's ``harkd.steps`` or ``harkd.triggers`` entry point names.

``from harkd.registry import StepKind`` is the documented, stable import for plugins; the
registry itself lives in :mod:`harkd.core.registry`, and the protocols a compiled step or
trigger satisfies in :mod:`harkd.contracts`. See the README's "Plugins" section and
``examples/harkd-sample-plugin``.
"""

from __future__ import annotations

from .contracts import Step, Trigger
from .core.registry import Registry, StepKind, TriggerKind

__all__ = ["Registry", "Step", "StepKind", "Trigger", "TriggerKind"]
