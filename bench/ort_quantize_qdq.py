#!/usr/bin/env python3
"""onnxruntime's own int8 post-training quantization of the teacher: the off-the-shelf row that
every EfQuantFace student must beat. Static QDQ, per-channel int8 weights, int8 activations,
calibrated (MinMax) on images drawn with a fixed seed from the training crops.

    $EFQ_PYTHON bench/ort_quantize_qdq.py --out out/w600k_mbf-int8-qdq.onnx
    $EFQ_PYTHON bench/ort_lfw.py --model out/w600k_mbf-int8-qdq.onnx --json out/ort-int8.json
"""
import argparse, os, random
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from ort_lfw import load, scan


class Reader(CalibrationDataReader):
    def __init__(self, root, images, batch, input_name):
        self.batches = [images[i:i + batch] for i in range(0, len(images), batch)]
        self.root, self.name = root, input_name

    def get_next(self):
        if not self.batches:
            return None
        b = self.batches.pop(0)
        return {self.name: np.stack([load(self.root, p) for p in b])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("EFQ_TEACHER"))
    ap.add_argument("--lfw", default=os.environ.get("EFQ_LFW", "../shared/data/lfw"))
    ap.add_argument("--crops", default="aligned112")
    ap.add_argument("--calib-images", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import onnx
    root = Path(a.lfw) / a.crops
    images, _ = scan(root)
    random.Random(a.seed).shuffle(images)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pre = out.with_suffix(".pre.onnx")
    # Per-channel QDQ needs DequantizeLinear's `axis` (opset >= 13); w600k_mbf is opset 11.
    from onnx import version_converter
    onnx.save(version_converter.convert_version(onnx.load(a.model), 13), str(pre))
    quant_pre_process(str(pre), str(pre), skip_symbolic_shape=True)
    name = onnx.load(str(pre)).graph.input[0].name
    quantize_static(str(pre), str(out), Reader(root, images[: a.calib_images], 32, name),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    pre.unlink()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
