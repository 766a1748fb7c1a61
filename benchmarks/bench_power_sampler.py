"""The power sampler's own cost on the timed loop (target: latency ratio sampler-on / sampler-off ≤ 1.02).

A fake hwmon source (a real sysfs-like file in a temporary directory, so each sample pays a real file
read) is sampled at the given period around blocks of a timed loop, exactly as harness.bench.loadgen does
(start before the block, stop after it). Blocks with the sampler on and off alternate in one process,
so drift and neighbours' load hit both alike. Reports the median and mean per-iteration latency
ratios and the cost of one source read.

Run: python benchmarks/bench_power_sampler.py [--workload numpy|ort] [--period-ms 10] [--rounds 20] [--iters 200]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from harness.power.hwmon import HwmonSource
from harness.power.monitor import SampledPowerMonitor


def numpy_workload(size: int):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    return lambda: a @ b


def ort_workload(threads: int):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "input"
    for i in range(4):  # a small MLP: 4 × (MatMul 256×256 + Relu)
        w = rng.normal(0, 0.05, (256, 256)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [8, 256])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [8, 256])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((8, 256)).astype(np.float32)
    return lambda: sess.run(None, {"input": x})


def trimmed_mean(values: list[int], keep: float = 0.99) -> float:
    ordered = sorted(values)
    return statistics.fmean(ordered[: max(1, int(len(ordered) * keep))])


def timed_block(fn, iters: int, out: list[int]) -> None:
    clock = time.perf_counter_ns
    for _ in range(iters):
        t0 = clock()
        fn()
        out.append(clock() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("numpy", "ort"), default="numpy")
    ap.add_argument("--size", type=int, default=192, help="numpy matmul size")
    ap.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    ap.add_argument("--period-ms", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=20, help="alternating off/on block pairs")
    ap.add_argument("--iters", type=int, default=1000, help="iterations per block (a block should span many periods)")
    args = ap.parse_args()

    fn = numpy_workload(args.size) if args.workload == "numpy" else ort_workload(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        hw = Path(tmp) / "hwmon0"
        hw.mkdir()
        (hw / "name").write_text("ina226\n")
        (hw / "power1_input").write_text("5000000\n")
        source = HwmonSource(root=tmp)
        n = 2000
        t0 = time.perf_counter()
        for _ in range(n):
            source.read()
        read_us = (time.perf_counter() - t0) / n * 1e6
        monitor = SampledPowerMonitor(source, period_ms=args.period_ms)

        for _ in range(args.iters // 4):  # warm caches and thread pools
            fn()
        off: list[int] = []
        on: list[int] = []
        samples = 0
        for r in range(args.rounds):
            # Alternate which goes first so neither always follows the other.
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for mode in order:
                if mode == "on":
                    monitor.start()
                    timed_block(fn, args.iters, on)
                    monitor.stop()
                else:
                    timed_block(fn, args.iters, off)
        fields = monitor.summarize([args.iters] * args.rounds, [0.0] * args.rounds)
        samples = fields["power_samples"]
        monitor.close()

    med_off, med_on = statistics.median(off), statistics.median(on)
    # On a shared machine a few preempted iterations dominate the plain mean: trim the slowest 1%.
    mean_off, mean_on = trimmed_mean(off), trimmed_mean(on)
    print(f"workload={args.workload} period_ms={args.period_ms:g} rounds={args.rounds} iters/block={args.iters}")
    print(f"source read: {read_us:.1f} us per sample ({read_us / (args.period_ms * 1e3) * 100:.3f}% of one period)")
    print(f"samples taken with the sampler on: {samples} "
          f"(effective period {fields['power_sample_period_ms']:.2f} ms)")
    print(f"latency off: median {med_off / 1e3:.1f} us, 99%-trimmed mean {mean_off / 1e3:.1f} us")
    print(f"latency on : median {med_on / 1e3:.1f} us, 99%-trimmed mean {mean_on / 1e3:.1f} us")
    ratio = med_on / med_off
    print(f"ratio on/off: median {ratio:.4f}, trimmed mean {mean_on / mean_off:.4f} (target <= 1.02 on the median): "
          f"{'PASS' if ratio <= 1.02 else 'FAIL'}")
    return 0 if ratio <= 1.02 else 1


if __name__ == "__main__":
    raise SystemExit(main())
