"""A user trainer for the tests (trainer:recording_trainer:make): records every hook call."""
import os

import numpy

from sprintiface.training import Trainer

CALLS = []
#: What the trainer kept: (segment, error signal or None), as a batching learner keeps them.
KEPT = []


class RecordingTrainer(Trainer):
    fail_on = None

    def start_epoch(self, epoch):
        CALLS.append(("start_epoch", epoch))

    def train_segment(self, segment):
        if segment.name == RecordingTrainer.fail_on:
            raise ValueError(f"cannot learn from {segment.name}")
        CALLS.append(("train_segment", segment.name, segment.num_frames, segment.epoch))
        KEPT.append((segment, None))

    def backward(self, segment, error, error_signal, natural_pairing_type):
        CALLS.append(("backward", segment.name, error, error_signal.shape, natural_pairing_type,
                      float(error_signal[0, 0])))
        KEPT.append((segment, error_signal))

    def discard(self, segment):
        CALLS.append(("discard", segment.name))

    def end_epoch(self, epoch):
        CALLS.append(("end_epoch", epoch))

    def save_checkpoint(self, directory, epoch):
        with open(os.path.join(directory, f"model.{epoch:03d}"), "w") as file:
            file.write("weights")
        CALLS.append(("save_checkpoint", epoch))

    def load_checkpoint(self, directory, epoch):
        CALLS.append(("load_checkpoint", epoch))

    def finish(self):
        CALLS.append(("finish",))

    def abort(self):
        CALLS.append(("abort",))


def make(config, input_dim, output_dim, target_mode):
    return RecordingTrainer(config, input_dim, output_dim, target_mode)


def uniform(num_frames, classes):
    return numpy.full((num_frames, classes), 1.0 / classes, numpy.float32)
