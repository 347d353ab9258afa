"""Several RASR trainer processes as one training run: torch.distributed from the launcher's environment.

A site that runs N RASR nn-trainer processes, each on its own corpus partition
(RASR's ``corpus.partition`` / ``select-partition``), starts them with the
standard variables a launcher sets: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``. With ``WORLD_SIZE`` > 1 the torch trainer of each process
joins the others (gloo on CPU, NCCL on GPU) and trains one model with
DistributedDataParallel: gradients are all-reduced on every backward pass.

The partitions feed different numbers of segments. Within an epoch the
processes run under ``torch.distributed.algorithms.Join``: a process that has
run out shadows the others' collectives (contributing nothing), so none waits
forever, and gradients are averaged over the processes still training
(``divide_by_initial_world_size=False``), so none is weighted down. At the
epoch end the process that trained the most mini-batches, which therefore
holds every update, sends its parameters, buffers and optimizer state to the
others (:meth:`ProcessGroup.share_state`), and their parameters are checked to
be bit-identical; process 0 then writes the checkpoint and the export.

Every process goes through every epoch (the session starts and ends the
epochs a process is fed nothing of), so they meet at every epoch end. A
process that RASR feeds no segment at all never starts its trainer (RASR
calls init lazily), and the others wait for it until the process group's
timeout: every partition needs at least one segment.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Optional

import torch
import torch.distributed as dist

from sprintiface.errors import ConfigError, TrainerError
from sprintiface.log import logger

#: The launcher's variables, in the order they are checked.
ENVIRONMENT = ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT")


def _integer_variable(name: str, minimum: int) -> int:
    value = os.environ.get(name)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum:
        raise ConfigError(f"environment variable {name}: expected an integer >= {minimum} for a distributed "
                          f"torch trainer (WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}); got {value!r}")
    return number


def parameter_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in state_dict order: equal digests, equal models."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class ProcessGroup:
    """This process's place in a distributed run; :meth:`from_environment` makes one
    only when ``WORLD_SIZE`` > 1."""

    def __init__(self, rank: int, world_size: int, device: torch.device):
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self._join = None

    @classmethod
    def from_environment(cls, device: torch.device) -> Optional["ProcessGroup"]:
        """Join the run the launcher's variables describe (blocks until every process
        has joined); None for a single process (WORLD_SIZE unset or 1)."""
        if os.environ.get("WORLD_SIZE", "").strip() in ("", "1"):
            return None
        world_size = _integer_variable("WORLD_SIZE", 1)
        rank = _integer_variable("RANK", 0)
        if rank >= world_size:
            raise ConfigError(f"environment variable RANK: expected a value below WORLD_SIZE={world_size}; "
                              f"got {rank}")
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise ConfigError(f"environment variable {name}: a distributed torch trainer (WORLD_SIZE="
                                  f"{world_size}) needs it (the address and port of process 0); it is not set")
        _integer_variable("MASTER_PORT", 1)
        backend = "nccl" if device.type == "cuda" else "gloo"
        logger.info("torch trainer: process %d of %d joins %s:%s (%s)", rank, world_size,
                    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], backend)
        try:
            dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
        except Exception as error:
            raise TrainerError(f"torch trainer process {rank} of {world_size} cannot join "
                               f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: {error}") from error
        return cls(rank, world_size, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in DistributedDataParallel (parameters broadcast from process 0 here)."""
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def begin_epoch(self, network: torch.nn.Module) -> None:
        """Enter the epoch's Join context (``network`` is the DistributedDataParallel module)."""
        from torch.distributed.algorithms import Join

        self._join = Join([network], divide_by_initial_world_size=False)
        self._join.__enter__()

    def end_epoch(self) -> None:
        """Leave the epoch's Join context: wait, shadowing the others, until every process is done."""
        join, self._join = self._join, None
        if join is not None:
            join.__exit__(None, None, None)

    def most_trained_rank(self, batches: int) -> int:
        """The process that trained the most mini-batches this epoch (the lowest such rank)."""
        counts = [None] * self.world_size
        dist.all_gather_object(counts, batches)
        return max(range(self.world_size), key=lambda rank: (counts[rank], -rank))

    def share_state(self, state: Optional[Any], source: int) -> Any:
        """``state`` of process ``source`` (any picklable object of tensors), on every process."""
        box = [state if self.rank == source else None]
        dist.broadcast_object_list(box, src=source)
        return box[0]

    def check_identical(self, module: torch.nn.Module, epoch: int) -> str:
        """The parameter digest, after checking every process has the same one."""
        digest = parameter_digest(module)
        digests = [None] * self.world_size
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise TrainerError(f"after epoch {epoch} the processes' models differ (parameter digests "
                               f"{', '.join(f'{rank}: {d[:12]}' for rank, d in enumerate(digests))})")
        return digest

    def outcome_of_main(self, failure: Optional[str]) -> Optional[str]:
        """Process 0's ``failure`` text (or None), on every process: a barrier that also
        tells the others whether process 0 wrote the epoch's files."""
        return self.share_state(failure, 0)

    def close(self) -> None:
        self._join = None
        if dist.is_initialized():
            dist.destroy_process_group()
