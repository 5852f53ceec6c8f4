"""Where sweep points run: a Dask ``LocalCluster`` on this machine, or an existing Dask cluster's
scheduler (``dask scheduler`` + ``dask worker``, or SLURM/PBS through dask-jobqueue).

Each worker runs one point at a time (one Dask thread); the notebook's kernel gets a fair share of the
CPU cores through OMP/MKL thread counts (torch takes its thread count from OMP_NUM_THREADS). A point that
trains on CUDA asks for the worker resource ``GPU=1``; locally, one worker per GPU, each with its own
``CUDA_VISIBLE_DEVICES``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator

from labkit.errors import LabkitError
from labkit.paths import environ_kept

GPU = {"GPU": 1}


class ClusterError(LabkitError, RuntimeError):
    """The Dask scheduler cannot be reached (raised before any point runs)."""


def needs_gpu(params: dict) -> bool:
    """A point trains on CUDA when its device says so, or when ``auto`` meets the GPU profile (full)."""
    device = str(params.get("device", "auto"))
    return device.startswith("cuda") or (device == "auto" and params.get("profile") == "full")


def local_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES entries (the ones already made visible, if set)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable torch/CUDA means no GPU
        return []


def dask_setup(worker) -> None:
    """Preload of the local cluster's workers: Ctrl-C reaches the whole process group, and the client
    alone handles it (it closes the cluster in order); a worker interrupted on its own would only
    print tracebacks."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def thread_env(threads: int) -> dict[str, str]:
    n = str(max(1, threads))
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}  # run_point sets plain progress


def local_shape(jobs: int | None, gpus: list[str]) -> tuple[int, dict[str, str]]:
    """Workers of the local cluster (``jobs``, default 1; with GPUs, one per GPU, at most ``jobs`` if given)
    and their environment (a fair share of the cores each)."""
    n = (min(jobs, len(gpus)) if jobs else len(gpus)) if gpus else (jobs or 1)
    return n, thread_env((os.cpu_count() or 1) // n)


def start_local(n: int, env: dict[str, str], gpus: list[str]):
    """A LocalCluster on 127.0.0.1 of ``n`` single-threaded worker processes with ``env``; with ``gpus``,
    each worker gets one of them as CUDA_VISIBLE_DEVICES and the resource GPU=1."""
    from distributed import LocalCluster
    cluster = LocalCluster(n_workers=0 if gpus else n, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=":0", env=env, preload=["labkit.sweep.cluster"],
                           silence_logs=logging.ERROR)
    if gpus:
        # LocalCluster gives every worker the same options; a per-GPU environment needs one spec each.
        for gpu in gpus[:n]:
            options = {**cluster.new_spec["options"], "env": {**env, "CUDA_VISIBLE_DEVICES": gpu},
                       "resources": GPU}
            cluster.worker_spec[f"gpu{gpu}"] = {"cls": cluster.new_spec["cls"], "options": options}
        cluster.scale(n)
    return cluster


def dashboard_line(link: str | None) -> str:
    if importlib.util.find_spec("bokeh") is None:
        return "dashboard: none (pip install 'bokeh>=3.1' to get Dask's dashboard)"
    return f"dashboard: {link}"


def connect_remote(address: str):
    """A Client of the scheduler at ``address``, or one ClusterError line naming the address and the fix.
    The wait is Dask's own connect timeout (``distributed.comm.timeouts.connect``)."""
    import dask
    from distributed import Client
    timeout = dask.config.get("distributed.comm.timeouts.connect")
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise ClusterError(f"cannot reach the Dask scheduler at {address!r} (waited {timeout}): "
                           f"{type(err).__name__}; start one (dask scheduler) or drop --scheduler / "
                           f"DASK_SCHEDULER_ADDRESS to run on a local cluster") from None


@contextlib.contextmanager
def client_for(scheduler: str | None, jobs: int | None, gpus: list[str], want_gpu: bool = False) -> Iterator:
    """Yield a connected ``distributed.Client`` of ``scheduler``, or of a local cluster started (with a
    worker per GPU of ``gpus``, if any) and closed here."""
    from distributed import Client
    if scheduler:
        client = connect_remote(scheduler)
        try:
            workers = client.scheduler_info().get("workers", {})
            print(f"cluster: {scheduler}, {len(workers)} worker(s) now; "
                  f"{dashboard_line(client.dashboard_link)}", flush=True)
            if not workers:
                print("  no workers yet: points wait until some join (dask worker ADDRESS)", flush=True)
            elif want_gpu and not any(w.get("resources", {}).get("GPU") for w in workers.values()):
                print("  the points want a GPU (resource GPU=1) and no worker has one yet: start workers with "
                      "--resources GPU=1, or sweep with -p device cpu", flush=True)
            yield client
        finally:
            client.close()
        return
    import dask
    n, env = local_shape(jobs, gpus)
    # Dask's nanny writes its pre-spawn variables (OMP_NUM_THREADS=1, ...) into this, the client's, process
    # environment, where papermill kernels started later would inherit them: give the nanny the workers'
    # share, and the client its own environment back when the cluster closes.
    spawn = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in env.items() if k.endswith("_THREADS")}
    touched = set(dask.config.get("distributed.nanny.pre-spawn-environ")) | {"PYTHONHASHSEED"}
    with environ_kept(touched), dask.config.set(spawn), start_local(n, env, gpus) as cluster, \
            Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(n)
        share = env["OMP_NUM_THREADS"]
        where = f", one per GPU ({', '.join(gpus[:n])})" if gpus else ""
        print(f"cluster: local, {n} worker(s){where}, {share} CPU thread(s) each; "
              f"{dashboard_line(cluster.dashboard_link)}", flush=True)
        yield client
