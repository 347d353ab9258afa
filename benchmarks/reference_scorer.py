"""The baseline: a feature scorer written the way RETURNN's PythonFeatureScorer is,
on a bare ONNX Runtime session (no RETURNN needed).

add_feature checks time and shape with asserts and appends the frame to a
list; compute stacks the list into (F, T), runs the model, takes -log of the
posteriors and subtracts the -log prior; get_scores returns a column view of
the (C, T) score matrix.
"""
import numpy
import onnxruntime


class ReturnnStyleScorer:
    def __init__(self, model_path, prior_term=None, threads=1):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.length_name = inputs[1].name if len(inputs) > 1 else None
        # RETURNN keeps priors as -prior_scale * log p(s) and subtracts them.
        self.priors = None if prior_term is None else -numpy.asarray(prior_term, dtype=numpy.float32)
        self.features = []
        self.scores = None
        self.input_dim = self.output_dim = None

    def init(self, input_dim, output_dim):
        self.input_dim, self.output_dim = input_dim, output_dim

    def get_feature_buffer_size(self):
        return -1

    def add_feature(self, feature, time):
        assert time == len(self.features)
        assert feature.shape == (self.input_dim,)
        self.features.append(feature)

    def get_posteriors(self, num_frames):
        assert 0 < num_frames == len(self.features)
        features = numpy.stack(self.features, axis=1)  # (F, T)
        feeds = {self.input_name: features.T[None]}
        if self.length_name:
            feeds[self.length_name] = numpy.array([num_frames], dtype=numpy.int32)
        posteriors = self.session.run(None, feeds)[0][0].T  # (C, T)
        assert posteriors.shape == (self.output_dim, num_frames)
        return posteriors

    def compute(self, num_frames):
        posteriors = self.get_posteriors(num_frames)
        scores = -numpy.log(posteriors)
        if self.priors is not None:
            scores -= numpy.expand_dims(self.priors, axis=1)
        self.scores = scores

    def get_scores(self, time):
        return self.scores[:, time]

    def reset(self, num_frames):
        assert num_frames == len(self.features)
        del self.features[:]
        self.scores = None

    def exit(self):
        pass
