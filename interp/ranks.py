"""Which images this process extracts when ``torchrun`` (or ``srun``) starts several.

``torchrun --nproc-per-node N -m interp extract ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set (on several machines, torchrun's rendezvous, e.g.
one ``srun torchrun ...`` per node under Slurm). Each rank extracts a contiguous run of whole
batches (the batches a single process would run, so the values are the same) into its
own rank file; the ranks then meet at a barrier of a ``gloo`` process group (no GPU
needed for it), and rank 0 publishes the cache over the rank files
(:mod:`caches.parts`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from interp.errors import CacheError, ConfigError

__all__ = ["Part", "BARRIER_TIMEOUT"]

# How long a rank waits at the barrier for the others: as long as the slowest rank's
# extraction may still take (a rank that fails ends the whole job through torchrun).
BARRIER_TIMEOUT = timedelta(days=2)
_STARTED: list[bool] = []  # whether this process started the group it waits in
POLL_SECONDS = 2.0  # how often a waiting rank looks whether its launcher is still there


def wait_for(work: Any, rank: int, poll: float = POLL_SECONDS) -> None:
    """Wait for the barrier ``work`` (an async ``torch.distributed`` op) to complete, and
    give up with a CacheError once this process's launcher (its parent: torchrun) is
    gone: the other ranks can then never arrive, and without a launcher no one would
    end this one."""
    parent = os.getppid()
    while not work.is_completed():
        if os.getppid() != parent:
            raise CacheError(
                f"rank {rank}: the torchrun launcher ended while this rank waited for the "
                f"others at the barrier; its rank file is finished and kept: rerun the same "
                f"torchrun command to publish the cache (finished rank files are reused)"
            )
        time.sleep(poll)
    work.wait()


@dataclass(frozen=True)
class Part:
    """Rank ``rank`` of ``ranks`` processes extracting one cache together (``local_rank``
    of ``local_ranks`` on its machine, which picks its GPUs)."""

    rank: int = 0
    ranks: int = 1
    local_rank: int = 0
    local_ranks: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.ranks or not 0 <= self.local_rank < self.local_ranks:
            raise ConfigError(
                f"rank must lie in 0..ranks-1 and local_rank in 0..local_ranks-1, got "
                f"rank={self.rank}, ranks={self.ranks}, local_rank={self.local_rank}, "
                f"local_ranks={self.local_ranks}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Part:
        """This process's part, from what torchrun set; rank 0 of 1 otherwise."""
        env = os.environ if env is None else env
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            return cls(
                int(env["RANK"]),
                int(env["WORLD_SIZE"]),
                int(env.get("LOCAL_RANK", 0)),
                int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])),
            )
        except (KeyError, ValueError) as err:
            raise ConfigError(
                f"WORLD_SIZE is set ({env['WORLD_SIZE']!r}) but RANK is not a number "
                f"({env.get('RANK')!r}): start the ranks with torchrun"
            ) from err

    @property
    def parallel(self) -> bool:
        return self.ranks > 1

    def images(self, n: int, batch_size: int) -> tuple[int, int]:
        """``(start, stop)``: this rank's images of ``n``, whole batches of ``batch_size``
        (the last may hold fewer; a rank beyond the number of batches gets none)."""
        batches = -(-n // batch_size)
        first, last = batches * self.rank // self.ranks, batches * (self.rank + 1) // self.ranks
        return min(n, first * batch_size), min(n, last * batch_size)

    def describe(self, n: int, batch_size: int) -> dict[str, int]:
        """The rank file's ``part`` attribute."""
        start, stop = self.images(n, batch_size)
        return {"rank": self.rank, "ranks": self.ranks, "start": start, "stop": stop}

    def device(self) -> str:
        """The GPU of this rank on its machine (``cuda:<local_rank>``)."""
        return f"cuda:{self.local_rank}"

    def gpus(self, count: int) -> list[int]:
        """This rank's share of the machine's ``count`` GPUs, for a model spread over
        several (``device_map="auto"`` in each rank): ``count // local_ranks`` in a row."""
        share = count // self.local_ranks
        if share < 1:
            raise ConfigError(
                f"{self.local_ranks} ranks on a machine with {count} GPUs leave some rank "
                f"without one; start at most {count} ranks per machine (--nproc-per-node)"
            )
        return list(range(self.local_rank * share, (self.local_rank + 1) * share))

    def barrier(self, last: bool = False) -> None:
        """Wait until every rank got here (a ``gloo`` group over torchrun's rendezvous,
        started here unless one is running, and ended at the ``last`` barrier if so;
        nothing to wait for with one rank)."""
        if not self.parallel:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(
                "gloo", rank=self.rank, world_size=self.ranks, timeout=BARRIER_TIMEOUT
            )
            _STARTED.append(True)
        group = (
            None
            if dist.get_backend() == "gloo"
            else dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT)
        )
        wait_for(dist.barrier(group=group, async_op=True), self.rank)
        if last and _STARTED:
            dist.destroy_process_group()
            _STARTED.clear()
