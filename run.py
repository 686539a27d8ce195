"""Train, validate and test an HVAC fault classifier on multivariate sensor windows.

``python run.py --help`` lists the flags; the work is done by ``exp.launch.main``.
Exit codes: 0 success, 1 an output file could not be written (disk full, permission lost),
2 bad arguments or data (one-line message), 3 training aborted (the loss stayed non-finite),
4 another process of a torchrun run failed or timed out, 130 after Ctrl-C / 143 after SIGTERM
(a resumable checkpoint is written).
"""

from exp.launch import cli

if __name__ == "__main__":
    cli()
