"""The settings a command runs with: ``harkd.yaml`` under the command's options, or the
file's errors on stderr and exit 78. Shared by :mod:`harkd.cli` (``harkd run``) and
:mod:`harkd.commands`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EX_CONFIG = 78


def load_settings(args: argparse.Namespace, **extra: Any) -> Any:
    from . import config, logs
    from .errors import ConfigErrors

    overrides = {"pipelines": getattr(args, "pipelines", None), **extra}
    try:
        s = config.load(getattr(args, "config", None), overrides)
    except ConfigErrors as exc:
        for e in exc.errors:
            print(e, file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None
    logs.configure(getattr(args, "log_level", None) or s.log_level, s.log_format)
    return s
