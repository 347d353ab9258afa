"""Two (or more) threads on one feature scorer: run as a script, in its own process.

    python tests/scorer_thread_scenarios.py SCENARIO MODEL.onnx SECONDS [VARIANT]

RASR calls a scorer from one thread; this is what happens when something
does not. The library's documented answer is that a call coming while another
is inside the scorer's buffer is refused with ``ProtocolError``: never a crash,
never a wrong score. Each scenario runs its threads for SECONDS, then the main
thread scores a fresh segment, which must equal bare ONNX Runtime. It prints
one JSON line of counts and exits 0 when every call either did what it should
or was refused with an allowed library error, 1 otherwise. A segfault shows as
a negative return code to the test that runs it (tests/test_scorer_threads.py).

Every frame that goes in is row ``time`` of one fixed segment ``X`` and the
model is frame-wise (an MLP), so whatever the interleaving, the buffer holds
a prefix of ``X`` and a served row ``t`` must equal the reference row ``t``.
A row is checked unless a compute() that may have written scores was running
or succeeded between asking for it and copying it (a row is a view, valid
until the next compute(), as RASR uses it); a refused compute() must not have
written anything, so one that came and went meanwhile does not excuse a wrong row.
"""
from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
import traceback
from typing import Optional

import numpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scorer_reference import RTOL, ATOL, ReferenceScorer, assert_scores, rasr_module_init, score_buffer

import sprintiface
from sprintiface import FeatureError, ProtocolError

SEGMENT_FRAMES = 3000

#: The open bug pinned by test_calls_landing_at_any_line_of_compute[shrink/grow]
#: (tests/test_scorer_threads.py): compute() checks num_frames against the count,
#: then sizes the score block for the count of a later moment. While it is open,
#: the random scenarios keep out of its way (a score block already sized for any
#: buffer they build; no init() in "everything"; rows read only below a count the
#: reading thread computed), so that they fail only on something new. Set it to
#: False when those tests pass.
COMPUTE_WINDOW_BUG_OPEN = False


class Run:
    """Shared state of one scenario: the scorer, the segment, what happened."""

    def __init__(self, model_path: str, seconds: float, allowed=(ProtocolError,)):
        self.model_path = model_path
        self.seconds = seconds
        self.allowed = allowed
        self.scorer = rasr_module_init(sprintiface, f"onnx:{model_path},log_level:warning")
        self.reference = ReferenceScorer(model_path)
        self.input_dim = self.reference.session.get_inputs()[0].shape[-1]
        self.output_dim = self.reference.session.get_outputs()[0].shape[-1]
        self.scorer.init(input_dim=self.input_dim, output_dim=self.output_dim)
        rng = numpy.random.default_rng(7)
        self.x = rng.standard_normal((SEGMENT_FRAMES, self.input_dim)).astype(numpy.float32)
        self.expected = self.reference.scores(self.x)
        if COMPUTE_WINDOW_BUG_OPEN:  # size the score block for the largest buffer (see above)
            score_buffer(self.scorer, self.x)
            self.scorer.reset(num_frames=SEGMENT_FRAMES)
        self.lock = threading.Lock()
        self.counts = {}
        self.unexpected = []
        self.computes_running = 0     # compute() calls inside the scorer now
        self.computes_succeeded = 0
        self.stop_at = 0.0

    def count(self, key: str, n: int = 1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def running(self) -> bool:
        return time.monotonic() < self.stop_at and not self.unexpected

    def attempt(self, call, **kwargs):
        """Make one scorer call; returns (True, result) or (False, None) when it was refused
        with an allowed error. Anything else is recorded as unexpected."""
        try:
            return True, call(**kwargs)
        except self.allowed as error:
            message = str(error)
            if "another" in message:
                self.count(f"refused while another call was inside ({type(error).__name__})")
            else:
                self.count(f"refused: {type(error).__name__}")
            return False, None
        except BaseException as error:
            with self.lock:
                trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
                self.unexpected.append(f"{getattr(call, '__name__', call)}({kwargs}): {trace}")
            return False, None

    # -- the calls threads make ---------------------------------------------------

    def buffered(self) -> int:
        return self.scorer.get_features().shape[1]

    def add_next_frame(self) -> bool:
        """add_feature of the next row of X at the next time (what RASR would send)."""
        t = self.buffered()
        if t >= SEGMENT_FRAMES:
            return False
        return self.attempt(self.scorer.add_feature, feature=numpy.array(self.x[t]), time=t)[0]

    def compute(self, num_frames: int) -> bool:
        with self.lock:
            self.computes_running += 1
        ok = False
        try:
            ok = self.attempt(self.scorer.compute, num_frames=num_frames)[0]
        finally:
            with self.lock:
                self.computes_running -= 1
                self.computes_succeeded += ok
        if ok:
            self.count("computes")
        return ok

    def check_rows(self, rows: int, asks: int = 20):
        """Ask ``asks`` random rows below ``rows``; every one served must be the reference's."""
        for t in random.sample(range(rows), min(asks, rows)):
            with self.lock:
                running, succeeded = self.computes_running, self.computes_succeeded
            ok, row = self.attempt(self.scorer.get_scores, time=t)
            if not ok:
                continue
            row = numpy.array(row, dtype=numpy.float64)  # copied at once, as RASR does
            with self.lock:
                undisturbed = running == 0 and self.computes_running == 0 and succeeded == self.computes_succeeded
            if not undisturbed:
                self.count("rows not checked (a compute ran meanwhile)")
                continue
            if not numpy.allclose(row, self.expected[t], rtol=RTOL, atol=ATOL):
                with self.lock:
                    self.unexpected.append(f"WRONG SCORES at row {t}: max abs error "
                                           f"{numpy.abs(row - self.expected[t]).max():.3g}")
                return
            self.count("rows checked")

    def reset_all(self):
        self.attempt(self.scorer.reset, num_frames=self.buffered())

    def fill(self):
        """Fill the buffer with all of X (main thread, before the threads start)."""
        self.scorer.reset(num_frames=self.buffered())
        for t in range(SEGMENT_FRAMES):
            self.scorer.add_feature(feature=numpy.array(self.x[t]), time=t)

    # -- running ---------------------------------------------------------------------

    def run(self, *loops):
        self.stop_at = time.monotonic() + self.seconds
        threads = [threading.Thread(target=self._guard(loop), name=loop.__name__) for loop in loops]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _guard(self, loop):
        def body():
            try:
                while self.running():
                    loop(self)
            except BaseException:
                with self.lock:
                    self.unexpected.append(f"thread {loop.__name__}: {traceback.format_exc()}")
        return body

    def finish(self) -> int:
        """After the threads: the scorer must score a fresh segment exactly."""
        try:
            self.scorer.reset(num_frames=self.buffered())
            fresh = numpy.random.default_rng(99).standard_normal((777, self.input_dim)).astype(numpy.float32)
            assert_scores(score_buffer(self.scorer, fresh), self.reference.scores(fresh),
                          "a fresh segment after the threads")
            self.scorer.reset(num_frames=777)
            self.scorer.exit()
        except BaseException:
            self.unexpected.append(f"after the threads: {traceback.format_exc()}")
        print(json.dumps({"counts": self.counts, "unexpected": self.unexpected}))
        return 1 if self.unexpected else 0


# -- scenarios ------------------------------------------------------------------------

def feeder(run: Run):
    """Adds frames (next row at the next time) and now and then resets the buffer."""
    if run.buffered() >= SEGMENT_FRAMES or random.random() < 0.002:
        run.reset_all()
    else:
        run.add_next_frame()


def computer(run: Run):
    """Computes whatever the buffer holds, then checks some rows."""
    rows = run.buffered()
    if rows and run.compute(rows):
        run.check_rows(rows)


def segment_scorer(run: Run):
    """Whole segments as RASR sends them; interference only makes calls refused."""
    rows = random.randint(500, SEGMENT_FRAMES)
    run.reset_all()
    for _ in range(rows):
        if not run.add_next_frame():
            return
    if run.compute(rows):
        run.check_rows(rows)


def initialiser(run: Run, pause: float = 0.2):
    """init() again (a new, empty buffer), then a pause of up to ``pause`` seconds (some
    segments get through whole, others are cut by the next init)."""
    run.attempt(run.scorer.init, input_dim=run.input_dim, output_dim=run.output_dim)
    run.count("init calls")
    time.sleep(random.uniform(0.0, pause))


def full_computer(run: Run):
    """compute() on the full buffer X, then checks some rows; after a refusal, a short pause
    (so that the rows of the other thread's compute get read too)."""
    if run.compute(SEGMENT_FRAMES):
        run.check_rows(SEGMENT_FRAMES)
    else:
        time.sleep(random.uniform(0.0, 0.002))


def row_reader(run: Run):
    run.check_rows(SEGMENT_FRAMES, asks=50)


def anything(run: Run):
    """Any of RASR's calls, with right arguments for what this thread last saw."""
    choice = random.random()
    if choice < 0.6:
        run.add_next_frame()
    elif choice < 0.75:
        computer(run)
    elif choice < 0.9:
        if not COMPUTE_WINDOW_BUG_OPEN:
            run.check_rows(max(run.buffered(), 1), asks=5)
    elif choice < 0.98 or COMPUTE_WINDOW_BUG_OPEN:
        run.reset_all()
    else:
        initialiser(run, pause=0.01)


def scenario_feed_while_computing(run: Run):
    """(a) add_feature/reset in one thread while another computes."""
    run.run(feeder, computer)


def scenario_init_while_computing(run: Run):
    """(b) init() while another thread is in compute()."""
    run.run(segment_scorer, initialiser)


def scenario_two_computes(run: Run):
    """(c) two compute() calls at once on the full buffer."""
    run.fill()
    run.run(full_computer, full_computer)


def scenario_get_scores_while_computing(run: Run):
    """(d) get_scores while compute runs."""
    run.fill()
    run.scorer.compute(num_frames=SEGMENT_FRAMES)
    run.run(full_computer, row_reader)


def scenario_everything(run: Run):
    """Three threads making any call at all."""
    run.run(anything, anything, anything)


def scenario_kernels(model_path: str, seconds: float) -> int:
    """Scorers with different score kernels scoring at once, while other threads ask which
    kernels there are: every buffer keeps its kernel (its scores are bit for bit what that
    kernel gives), and the answers about kernels never change."""
    from sprintiface._buffer import FrameBuffer, available_score_kernels, best_score_kernel, finish_scores, \
        score_kernels
    from sprintiface.config import load_config
    from sprintiface.engine import OnnxEngine

    engine = OnnxEngine.from_config(load_config(None, onnx=model_path))
    kernels, best, built = available_score_kernels(), best_score_kernel(), score_kernels()
    frames = numpy.random.default_rng(3).standard_normal((300, engine.input_dim)).astype(numpy.float32)
    raw = engine.forward(frames)
    expected = {}
    for kernel in kernels:
        expected[kernel] = raw.copy()
        finish_scores(expected[kernel], engine.kind, engine.logit_bias, None, kernel=kernel)
    distinct = len({expected[k].tobytes() for k in kernels})
    lock, counts, unexpected = threading.Lock(), {}, []
    stop_at = time.monotonic() + seconds

    def note(key):
        with lock:
            counts[key] = counts.get(key, 0) + 1

    def scorer_loop(kernel):
        buffer = FrameBuffer(engine.input_dim, engine.output_dim, -1, kernel=kernel)
        binding = engine.new_binding()
        while time.monotonic() < stop_at and not unexpected:
            buffer.clear()
            for t in range(frames.shape[0]):
                buffer.add_feature(frames[t], t)
            frames_address, scores_address = buffer.open_window(frames.shape[0])
            engine.run_into(binding, frames_address, frames.shape[0], scores_address)
            assert buffer.finish_window(engine.kind, engine.logit_bias, None) == -1
            rows = numpy.stack([numpy.array(buffer.get_scores(t)) for t in range(frames.shape[0])])
            assert buffer.kernel == kernel, (buffer.kernel, kernel)
            if not numpy.array_equal(rows, expected[kernel]):
                other = [k for k in kernels if numpy.array_equal(rows, expected[k])]
                raise AssertionError(f"the {kernel} buffer scored like {other or 'no kernel'}")
            note(f"segments scored with {kernel}")

    def prober():
        while time.monotonic() < stop_at and not unexpected:
            assert available_score_kernels() == kernels and best_score_kernel() == best and score_kernels() == built
            kernel = random.choice(kernels)
            assert FrameBuffer(4, 3, kernel=kernel).kernel == kernel
            note("kernel questions answered")

    def guarded(target, *args):
        def body():
            try:
                target(*args)
            except BaseException:
                with lock:
                    unexpected.append(traceback.format_exc())
        return threading.Thread(target=body)

    threads = [guarded(scorer_loop, kernel) for kernel in kernels] + [guarded(prober), guarded(prober)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"kernels": kernels, "bitwise distinct results": distinct, "counts": counts,
                      "unexpected": unexpected}))
    return 1 if unexpected else 0


def scenario_calls_inside_compute(model_path: str, chosen: Optional[str] = None) -> int:
    """Another thread's calls landing at each point of compute(), deterministically.

    A thread switch can come between any two lines of Python; whatever the other
    thread then calls runs before compute() goes on. Here that is played in one
    thread: a trace function stops compute() at its k-th line (in it or any
    Python function it calls) and makes the calls there, for k = 0, 1, 2, ...
    until compute() has fewer lines. The calls: reset + add_feature (the buffer
    shrinks), add_feature (it grows by one), init() (a new buffer). Before each
    run the score block is smaller than the frame block (a 1000-frame buffer was
    scored, then 2500 frames came), so a run that writes more rows than the
    block was sized for writes past its end.

    Afterwards every row get_scores serves must be the reference's for the frame
    the buffer holds at that time (the model is frame-wise), and a fresh segment
    must score exactly. ``chosen``: one of shrink, grow, reinit (default all).
    """
    run = Run(model_path, 0.0, allowed=(ProtocolError, FeatureError))
    other = numpy.random.default_rng(8).standard_normal((1, run.input_dim)).astype(numpy.float32)

    def shrink():
        run.attempt(run.scorer.reset, num_frames=run.buffered())
        run.attempt(run.scorer.add_feature, feature=numpy.array(other[0]), time=0)

    def grow():
        run.add_next_frame()

    def reinit():
        run.attempt(run.scorer.init, input_dim=run.input_dim, output_dim=run.output_dim)

    for interference in [f for f in (shrink, grow, reinit) if chosen in (None, f.__name__)]:
        for line in range(500):
            run.scorer.init(input_dim=run.input_dim, output_dim=run.output_dim)
            for t in range(1000):
                run.scorer.add_feature(feature=numpy.array(run.x[t]), time=t)
            run.scorer.compute(num_frames=1000)
            run.scorer.reset(num_frames=1000)
            for t in range(2500):
                run.scorer.add_feature(feature=numpy.array(run.x[t]), time=t)
            print(f"calls_inside_compute: {interference.__name__} at line {line}", file=sys.stderr, flush=True)
            hits = [0]

            def local(frame, event, arg):
                if event == "line":
                    # B023: the trace function is installed and removed within this iteration
                    if hits[0] == line:  # noqa: B023 - see above
                        interference()  # noqa: B023 - see above; untraced: a trace function's own calls are not
                    hits[0] += 1  # noqa: B023 - see above
                return local

            sys.settrace(lambda frame, event, arg: local)
            try:
                run.attempt(run.scorer.compute, num_frames=2500)
            finally:
                sys.settrace(None)
            check_served_rows(run, f"{interference.__name__} at line {line} of compute()")
            if run.unexpected:
                return run.finish()
            if hits[0] <= line:
                run.count(f"{interference.__name__}: lines of compute() tried", line)
                break
    return run.finish()


def check_served_rows(run: Run, when: str):
    """Rows get_scores serves now must be the reference's for the frames the buffer holds."""
    held = numpy.array(run.scorer.get_features()).T
    count = held.shape[0]
    for t in sorted({0, count - 2, count - 1, count, 2499, 2500} - {-1, -2}):
        ok, row = run.attempt(run.scorer.get_scores, time=t)
        if not ok:
            continue
        if t >= count:
            run.unexpected.append(f"{when}: get_scores(time={t}) served a row, but the buffer holds {count} frames")
            continue
        expected = run.reference.scores(held[t:t + 1])[0]
        if not numpy.allclose(numpy.array(row, dtype=numpy.float64), expected, rtol=RTOL, atol=ATOL):
            run.unexpected.append(f"{when}: WRONG SCORES at row {t} of {count}: max abs error "
                                  f"{numpy.nanmax(numpy.abs(numpy.array(row, dtype=numpy.float64) - expected)):.3g}")
        else:
            run.count("rows checked")
    run.attempt(run.scorer.reset, num_frames=count)


SCENARIOS = {
    "feed_while_computing": (scenario_feed_while_computing, (ProtocolError,)),
    # A concurrent init() empties the buffer: the other thread's next frame then has the
    # wrong time (FeatureError), its compute or reset the wrong count (ProtocolError).
    "init_while_computing": (scenario_init_while_computing, (ProtocolError, FeatureError)),
    "two_computes": (scenario_two_computes, (ProtocolError,)),
    "get_scores_while_computing": (scenario_get_scores_while_computing, (ProtocolError,)),
    "everything": (scenario_everything, (ProtocolError, FeatureError)),
}


def main(argv) -> int:
    name, model_path, seconds = argv[1], argv[2], float(argv[3])
    if name == "kernels":
        return scenario_kernels(model_path, seconds)
    if name == "calls_inside_compute":
        return scenario_calls_inside_compute(model_path, *argv[4:5])
    scenario, allowed = SCENARIOS[name]
    run = Run(model_path, seconds, allowed)
    scenario(run)
    return run.finish()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
