#!/usr/bin/env python3
"""Checks the ONNX layouts `shared/tests/onnx_layouts.rs` generates against the reference
implementations: each file passes `onnx.checker` (full check: types and shapes per its opset;
but for the inputs without a shape or type that some tools write and the importer tolerates),
and onnxruntime computes from raw images what the test takes it to compute, the plain export's
output on the layout's preprocessing of them (L2-normalised when the layout normalises).

    EFQ_ONNX_LAYOUT_DIR=/tmp/layouts cargo test -p efq-shared --test onnx_layouts
    python3 scripts/check_onnx_layouts.py /tmp/layouts

Needs numpy, onnx and onnxruntime (scripts/setup.sh's virtual environment has them).
"""

import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort


def run(path, x, one_at_a_time):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    runtime = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = runtime.get_inputs()[0].name
    if one_at_a_time:
        return np.concatenate([runtime.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    return runtime.run(None, {name: x})[0]


def main(folder):
    specs = sorted(pathlib.Path(folder).glob("*.json"))
    if not specs:
        sys.exit(f"no layouts in {folder}")
    worst, failed = 0.0, []
    for spec_path in specs:
        spec = json.loads(spec_path.read_text())
        model = spec_path.with_suffix(".onnx")
        plain = spec_path.with_suffix(".plain.onnx")
        try:
            if spec["valid_onnx"]:
                onnx.checker.check_model(onnx.load(str(model)), full_check=True)
        except Exception as e:  # noqa: BLE001 - report every file, then fail
            failed.append(f"{spec['name']}: checker: {e}")
            continue
        dims = onnx.load(str(plain)).graph.input[0].type.tensor_type.shape.dim
        c, h, w = (d.dim_value for d in dims[1:])
        raw = np.random.default_rng(0).uniform(0, 255, (2, c, h, w)).astype(np.float32)
        x = raw.copy()
        for ch in range(c):
            for op in spec["ops"]:
                k = np.float32(op["values"][0 if len(op["values"]) == 1 else ch])
                a, b = (k, x[:, ch]) if op["const_first"] else (x[:, ch], k)
                x[:, ch] = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                            "Div": np.divide}[op["op"]](a, b)
        expected = run(plain, x, False)
        if spec["l2"]:
            expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
        feed = np.ascontiguousarray(raw.transpose(0, 2, 3, 1) if spec["nhwc"] else raw)
        try:
            got = run(model, feed, spec["fixed_batch"])
        except Exception as e:  # noqa: BLE001
            failed.append(f"{spec['name']}: onnxruntime: {e}")
            continue
        err = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-6))
        worst = max(worst, err)
        if err > 1e-4:
            failed.append(f"{spec['name']}: relative error {err:.3g}")
    print(f"{len(specs)} layouts, worst relative error {worst:.3g}")
    for f in failed:
        print("FAIL", f)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/efq-onnx-layouts")
