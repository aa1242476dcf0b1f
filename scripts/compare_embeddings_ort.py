"""Compare `trainer embed` output with onnxruntime on the same crops and the same ONNX model.

Usage: $EFQ_PYTHON scripts/compare_embeddings_ort.py MODEL.onnx EMBEDDINGS.json
Feeds each crop as the default conventions say (RGB, (pixel - 127.5) / 127.5, NCHW), L2-normalises
onnxruntime's output and prints the worst and mean cosine to the embeddings in the JSON file.
"""
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image


def main():
    model, emb_file = sys.argv[1], sys.argv[2]
    rows = json.load(open(emb_file))
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    cos = []
    for r in rows:
        x = np.asarray(Image.open(r["image"]).convert("RGB"), dtype=np.float32)
        x = ((x - 127.5) / 127.5).transpose(2, 0, 1)[None]
        y = sess.run(None, {name: x})[0][0]
        y = y / np.linalg.norm(y)
        cos.append(float(np.dot(y, np.asarray(r["embedding"], dtype=np.float32))))
    print(f"{len(cos)} crops: cosine to onnxruntime worst {min(cos):.7f}, mean {np.mean(cos):.7f}")


if __name__ == "__main__":
    main()
