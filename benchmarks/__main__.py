"""`python -m benchmarks`: placeholder until the speed issue lands its suite."""

import sys

sys.exit("benchmarks: no benchmark suite yet (see the speed issue)")
