"""Entry point of one grading worker process: ``python -m megatron_redi.grading._worker FD``
(started by :mod:`.pool`, which owns the other end of the socket FD)."""

import sys
from multiprocessing.connection import Connection

from megatron_redi.grading.pool import worker_main

if __name__ == "__main__":
    worker_main(Connection(int(sys.argv[1])))
