"""Where per-record jobs run: in this process, in a pool of local processes, or on a Dask
distributed cluster (``--scheduler tcp://HOST:PORT``).

The jobs are pure functions of (input, settings) → one output file written atomically, so the
three give the same files; a job that fails (its worker lost twice, say) is reported by the
stage as that record's failure, and the batch goes on.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor

from ..exceptions import InvalidParameterError

#: How long to wait for a Dask scheduler to answer.
CONNECT_TIMEOUT = "20s"


@contextlib.contextmanager
def executor(workers: int = 1, scheduler: str | None = None, *,
             initializer: Callable | None = None, initargs: tuple = ()) -> Iterator[Executor | None]:
    """A ``concurrent.futures`` executor for per-record jobs, or ``None`` to run them here.

    Parameters
    ----------
    workers : int, default=1
        Local processes (more than one: a process pool; ``initializer`` runs in each).
    scheduler : str, optional
        Address of a Dask distributed scheduler; its workers run the jobs.

    Raises
    ------
    InvalidParameterError
        ``dask.distributed`` is not installed, or the scheduler cannot be reached.
    """
    if scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise InvalidParameterError("--scheduler needs Dask: pip install "
                                        "'sleepfm[cluster]' (dask[distributed]).") from None
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise InvalidParameterError(f"cannot reach the Dask scheduler at {scheduler} ({err}); "
                                        "start one with `dask scheduler` and workers with "
                                        "`dask worker ADDRESS`, or leave --scheduler out.") from None
        try:
            yield client.get_executor(pure=False)
        finally:
            client.close()
    elif workers > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=initializer,
                                 initargs=initargs) as pool:
            yield pool
    else:
        yield None
