"""The impure plumbing the entry points share, kept out of the pure ``bp/`` package.

``bp/`` holds the domain and does no I/O. Whatever touches the process or the outside world and is needed by more
than one entry point (producer, consumer, report, ml, infra, bench) lives here instead:

- ``cli``: argparse value types, logging set-up, SIGINT/SIGTERM stop flag, gc tuning, errors → one line + exit code;
- ``files``: atomic file writes (temporary file, fsync, rename);
- ``waits``: wait for a condition with a deadline (tenacity), one helper instead of hand-written poll loops.
"""
