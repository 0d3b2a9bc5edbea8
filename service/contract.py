"""The model contract, written once: what every served model takes and gives.

A served model maps a float32 batch ``[N, FEATURES]`` named ``INPUT_NAME`` (28x28 pictures, row-major,
values in [0, 1]) to class probabilities ``[N, NUM_CLASSES]`` named ``OUTPUT_NAME``. Training exports
exactly this signature, the runtime refuses a model without it, and the codecs, routes and benchmarks
read the names and sizes from here. Nothing is imported: training, serving and tools can all depend on
this module without dragging each other in.
"""

from __future__ import annotations

SIDE = 28  #: pictures are SIDE x SIDE pixels
FEATURES = SIDE * SIDE  #: values in one input row
NUM_CLASSES = 10  #: probabilities in one output row
INPUT_NAME = "input"  #: the ONNX graph's input tensor
OUTPUT_NAME = "probabilities"  #: the ONNX graph's output tensor
IMAGE_INPUT_NAME = "image"  #: the V2 BYTES input that carries encoded pictures instead of numbers

#: How a picture becomes an input row (``service.pictures.normalise``); a model card names its default.
#: ``mnist``: MNIST's own normalisation (20-px box, centre of mass); ``fashion``: Fashion-MNIST's
#: (28-px box, box centre); ``none``: the pixels as they are.
PREPROCESS_MODES = ("mnist", "fashion", "none")

DIGIT_LABELS = tuple(str(i) for i in range(NUM_CLASSES))  #: labels of a model whose card names none
