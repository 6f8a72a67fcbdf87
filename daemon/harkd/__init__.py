"""harkd: a daemon that runs AI pipelines written as YAML.

Importing this package is cheap: the daemon, the router and the voice parts load only when
they are used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
