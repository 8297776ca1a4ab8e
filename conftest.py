"""Repository-wide pytest setup.

Tests run tiny models; one intra-op thread per process avoids OpenMP oversubscription, which
made the same test vary from 8 s to 120 s on a busy 2-core machine.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
