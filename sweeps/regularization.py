"""The regularization sweep as a script, for ``ray job submit`` and plain runs; ``fer sweep`` is the same.

    python sweeps/regularization.py --smoke
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python sweeps/regularization.py --data s3://bucket/fer2013/v1 --storage s3://bucket/sweeps

The sweep itself is ``sweeps.driver`` (its docstring says what the study is and how it runs). The
``sweeps`` package is imported from the installed fer-sweep, or from the job's working directory,
which Ray puts on the job's ``PYTHONPATH``.
"""

import sys

from sweeps.driver import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
