"""Fleet: benchmark many boards at once through Dask distributed, one merged result store.

Each board runs `python -m harness agent` (a Dask worker advertising the resource ``device:<name>=1``,
one job at a time); `python -m harness run --cluster ADDRESS` plans on the coordinator and sends each job
to a worker holding its device (``launcher.DaskLauncher``). Files travel content-addressed (``blobs``); the
code that runs on a worker lives in ``task``. Requires ``pip install ".[fleet]"``.
"""


class FleetError(RuntimeError):
    """The fleet cannot be used as asked (scheduler unreachable, Dask missing); the message says what to do."""
