"""asv suite: trainer:torch, one epoch through RASR's calls and the same batches in a plain
PyTorch loop (see benchmarks/torch_training.py). Skipped without PyTorch."""
from . import torch_training


class TorchTrainingEpoch:
    """One epoch of a 40 -> 512 -> 512 -> 500 MLP over 160 segments (about 40k frames), 1 thread."""

    timeout = 600
    number = 1
    repeat = 3

    def setup(self):
        try:
            import torch  # noqa: F401 - only whether it is installed
        except ImportError:
            raise NotImplementedError("PyTorch is not installed (pip install 'sprintiface[torch]')") from None
        from sprintiface.training.protocol import BUILT_IN

        if "torch" not in BUILT_IN:  # an older commit of the history
            raise NotImplementedError("this sprintiface has no trainer:torch")
        self.workload = torch_training.Workload()
        self.padded = self.workload.plain_batches()

    def teardown(self):
        self.workload.close()

    def time_through_rasr_calls(self):
        self.workload.through_rasr()

    def time_plain_pytorch_loop(self):
        self.workload.plain_loop(self.padded)

    def track_training_frames_per_second(self):
        return self.workload.frames / self.workload.through_rasr()[0]

    track_training_frames_per_second.unit = "frames/s"
