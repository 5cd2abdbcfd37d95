"""fourds benchmarks: ``python -m benchmarks`` (or ``fourds bench``) runs every ``bench_*.py`` module and
writes one markdown + JSON report; see ``docs/benchmarks.md``. Each module also runs on its own:
``python benchmarks/bench_<name>.py --help``."""
