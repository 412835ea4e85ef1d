"""File names and limits of an ONNX artifact folder, shared by the exporters."""

MODEL = "model.onnx"
DATA = "model.onnx_data"
# Protobuf cannot hold more than 2 GiB: above this, weights go to model.onnx_data.
EXTERNAL_DATA_BYTES = 1_800_000_000
# The output projection's result when the logits go through more (Gemma 2's soft-capping).
HEAD_OUTPUT = "logits_uncapped"
