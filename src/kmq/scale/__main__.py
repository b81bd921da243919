"""``python -m kmq.scale``: how to run kmq's batch and chunked-video work on Dask across machines."""

from __future__ import annotations

GUIDE = """\
kmq on a Dask cluster
=====================

On one machine nothing needs setting up: `kmq batch` and `kmq video encode --chunks N` start a
local Dask cluster (one worker process per core, on 127.0.0.1) and stop it when they finish.

To use several machines, start one scheduler and any number of workers, then point kmq at the
scheduler. Every machine needs the same Python environment with kmq installed
(`pip install kmq`, same version), and the workers must see the input and output files at the
same paths as the machine that runs `kmq` (a shared file system: NFS, SMB, a cluster FS).

1. On the scheduler machine (port 8786 for workers and clients, 8787 for the dashboard):

       dask scheduler --host 0.0.0.0 --port 8786

2. On each worker machine, one single-threaded worker process per core
   (kmq's kernels are single-threaded; processes avoid Python's global lock):

       dask worker tcp://SCHEDULER:8786 --nworkers auto --nthreads 1

   Warm the compiled kernels once per machine before starting workers, so that each worker
   process loads them from the on-disk cache instead of compiling them again:

       python -m kmq.scale --warm

   Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, which makes kmq spend about
   40% more CPU (it allocates and frees large arrays all the time). kmq's own local cluster
   leaves it unset; for your workers, put this in ~/.config/dask/kmq.yaml on each machine:

       distributed:
         nanny:
           pre-spawn-environ:
             MALLOC_TRIM_THRESHOLD_: null

3. From any machine that can reach the scheduler:

       kmq batch /data/photos -o /data/photos-kmq -k 64 --scheduler tcp://SCHEDULER:8786
       kmq video encode film.mp4 -o film.kmqv --chunks 32 --scheduler tcp://SCHEDULER:8786

   A killed batch continues with --resume (outputs whose content hash still matches
   OUTDIR/manifest.csv are kept, the rest are done again).

Security: a Dask scheduler runs whatever code its clients send. Bind it to a private network
(or loopback), firewall ports 8786-8787, or configure TLS (`dask scheduler --tls-*`).
"""


def main(argv: list[str] | None = None) -> int:
    """Print the guide, or with ``--warm`` fill the compiled-kernel cache of this machine."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args == ["--warm"]:
        from kmq.scale.cluster import warm_kernels

        warm_kernels()
        print("kmq kernels compiled and cached")
        return 0
    if args and args not in (["-h"], ["--help"]):
        print("usage: python -m kmq.scale [--warm]", file=sys.stderr)
        return 2
    print(GUIDE, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
