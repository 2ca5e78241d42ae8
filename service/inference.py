"""Run a loaded Keras model fast on the CPU: through TensorFlow Lite's XNNPACK when it converts,
else as one traced TensorFlow graph."""

import logging
import os
import threading
import warnings

import numpy as np

log = logging.getLogger("service.inference")


def make_runner(model, input_shape, max_batch_size):
    """A callable that maps a uint8 batch to class probabilities, the fastest one that works."""
    import tensorflow as tf

    # The same thread count TensorFlow was configured with (TF_INTRA_OP_THREADS), else every core.
    threads = (tf.config.threading.get_intra_op_parallelism_threads()
               or len(os.sched_getaffinity(0)))
    try:
        return LiteRunner(model, input_shape, max_batch_size, threads)
    except Exception as error:
        log.warning("the model could not be converted to TensorFlow Lite (%s: %s); serving it "
                    "through TensorFlow instead", type(error).__name__, error,
                    extra={"event": "lite_conversion_failed"})
        return GraphRunner(model, input_shape, max_batch_size)


def _graph_function(model, input_shape):
    """The model's inference as a tf.function of uint8 pixels, traced for any batch size."""
    import tensorflow as tf

    return tf.function(lambda images: model(tf.cast(images, tf.float32), training=False),
                       input_signature=[tf.TensorSpec((None,) + tuple(input_shape), tf.uint8)])


class GraphRunner:
    """The model as one traced TensorFlow graph for every batch size."""

    def __init__(self, model, input_shape, max_batch_size):
        self._call = _graph_function(model, input_shape)
        # Trace and warm now, so that no request pays for it.
        for size in sorted({1, max(1, max_batch_size)}):
            self(np.zeros((size,) + tuple(input_shape), np.uint8))

    def __call__(self, images):
        return self._call(images).numpy()


class LiteRunner:
    """The model converted to TensorFlow Lite and run by XNNPACK.

    On this kind of small CNN XNNPACK takes about a fifth of TensorFlow's time for
    one image and matches its best batched speed at every batch size, so a batch
    is run as a few calls of power-of-two sizes rather than padded. Interpreters
    are not thread-safe, so calls take turns.
    """

    def __init__(self, model, input_shape, max_batch_size, threads):
        import tensorflow as tf

        concrete = _graph_function(model, input_shape).get_concrete_function()
        converted = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model).convert()
        self.sizes = [1 << power for power in range(max(1, max_batch_size).bit_length())]
        self._interpreters = {size: _Interpreter(converted, (size,) + tuple(input_shape), threads)
                              for size in self.sizes}
        self._lock = threading.Lock()

    def __call__(self, images):
        probabilities = np.empty((len(images),) + self._interpreters[1].output_shape[1:],
                                 np.float32)
        with self._lock:
            start = 0
            while start < len(images):
                size = next(size for size in reversed(self.sizes) if size <= len(images) - start)
                probabilities[start:start + size] = self._interpreters[size].run(
                    images[start:start + size])
                start += size
        return probabilities


class _Interpreter:
    """One TensorFlow Lite interpreter with its input fixed to one batch shape."""

    def __init__(self, converted, shape, threads):
        import tensorflow as tf

        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that it moves to the separate ai_edge_litert package.
            warnings.simplefilter("ignore")
            self._interpreter = tf.lite.Interpreter(model_content=converted, num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._interpreter.resize_tensor_input(self._input, shape, strict=True)
        self._interpreter.allocate_tensors()
        output = self._interpreter.get_output_details()[0]
        self._output, self.output_shape = output["index"], tuple(output["shape"])
        self.run(np.zeros(shape, np.uint8))

    def run(self, images):
        """Class probabilities for exactly this interpreter's batch shape."""
        self._interpreter.set_tensor(self._input, images)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)
