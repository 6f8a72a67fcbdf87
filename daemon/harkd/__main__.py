import gc

gc.disable()  # as harkd.cli.main does, from the first import on (3 ms of start)

from .cli import main  # noqa: E402

raise SystemExit(main(collect=True))
