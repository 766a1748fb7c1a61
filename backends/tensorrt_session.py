"""A TensorRT engine as a Session: one execution context, one CUDA stream, device and pinned host buffers.

Inference contract (the harness calls ``run`` then ``synchronize`` before each timestamp): ``run`` copies the
batch into pinned host memory, enqueues H2D, the engine and D2H on one CUDA stream, waits on that stream and
returns an owned copy of the output, so the returned array is valid at once and is never overwritten by the
next call. ``synchronize`` waits on the stream again (cheap when idle) so the contract also holds for callers
that only rely on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from backends.base import UnsupportedRequest, single_feed
from backends.tensorrt_runtime import CudaRuntime, make_logger


class TensorRTSession:
    """One engine, one execution context, one stream, device buffers and pinned host buffers."""

    def __init__(self, engine_path: Path, trt: Any, cuda: CudaRuntime, dla_core: int | None = None) -> None:
        self._trt = trt
        self._cuda = cuda
        self._bufs: list[Any] = []
        self._hosts: list[np.ndarray] = []
        self._stream = None
        cuda.activate(0)
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if dla_core is not None:
            self._runtime.DLA_core = int(dla_core)
        self._engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            text = " | ".join(self._logger.errors()[-2:]) or "no message"
            raise UnsupportedRequest(f"TensorRT {trt.__version__} could not deserialize {engine_path} ({text}); "
                                     "compile again to rebuild the engine")
        self._ctx = self._engine.create_execution_context()
        # TensorRT 8.5+ and 10 have the name-based I/O API; 8.0-8.4 only bindings.
        self._v3 = hasattr(self._ctx, "execute_async_v3") and hasattr(self._engine, "num_io_tensors")
        self._discover_io()
        self._stream = cuda.stream_create()
        self._set_batch(self.max_batch)
        out_shape = self._output_shape()
        self._d_in = cuda.malloc(int(np.prod((self.max_batch,) + self.sample_shape)) * np.dtype(self.in_dtype).itemsize)
        self._d_out = cuda.malloc(int(np.prod(out_shape)) * np.dtype(self.out_dtype).itemsize)
        self._bufs += [self._d_in, self._d_out]
        self._h_in = cuda.host_empty((self.max_batch,) + self.sample_shape, self.in_dtype)
        self._h_out = cuda.host_empty(out_shape, self.out_dtype)
        self._hosts += [self._h_in, self._h_out]
        self._current_batch = self.max_batch
        if self._v3:
            self._ctx.set_tensor_address(self.in_name, CudaRuntime.address(self._d_in))
            self._ctx.set_tensor_address(self.out_name, CudaRuntime.address(self._d_out))

    def _discover_io(self) -> None:
        trt, eng = self._trt, self._engine
        if self._v3:
            names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
            ins = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outs = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if len(ins) != 1 or not outs:
                raise UnsupportedRequest(f"the harness feeds one input and reads one output; engine has {ins} -> {outs}")
            self.in_name, self.out_name = ins[0], outs[0]
            shape = tuple(eng.get_tensor_shape(self.in_name))
            self.in_dtype = np.dtype(trt.nptype(eng.get_tensor_dtype(self.in_name)))
            self.out_dtype = np.dtype(trt.nptype(eng.get_tensor_dtype(self.out_name)))
            prof = None
            if shape[0] == -1:
                prof = eng.get_tensor_profile_shape(self.in_name, 0) if hasattr(eng, "get_tensor_profile_shape") \
                    else eng.get_profile_shape(0, self.in_name)  # 8.5/8.6 still accept the name here
        else:
            n = eng.num_bindings
            ins = [i for i in range(n) if eng.binding_is_input(i)]
            outs = [i for i in range(n) if not eng.binding_is_input(i)]
            if len(ins) != 1 or not outs:
                raise UnsupportedRequest("the harness feeds one input and reads one output")
            self._in_idx, self._out_idx = ins[0], outs[0]
            self.in_name, self.out_name = eng.get_binding_name(ins[0]), eng.get_binding_name(outs[0])
            shape = tuple(eng.get_binding_shape(ins[0]))
            self.in_dtype = np.dtype(trt.nptype(eng.get_binding_dtype(ins[0])))
            self.out_dtype = np.dtype(trt.nptype(eng.get_binding_dtype(outs[0])))
            prof = eng.get_profile_shape(0, ins[0]) if shape[0] == -1 else None
            self._n_bindings = n
        self.dynamic = shape[0] == -1
        self.sample_shape = tuple(int(d) for d in shape[1:])
        self.max_batch = int(tuple(prof[2])[0]) if prof is not None else int(shape[0])

    def _set_batch(self, n: int) -> None:
        if not self.dynamic:
            return
        shape = (n,) + self.sample_shape
        if self._v3:
            self._ctx.set_input_shape(self.in_name, shape)
        else:
            self._ctx.set_binding_shape(self._in_idx, shape)

    def _output_shape(self) -> tuple[int, ...]:
        if self._v3:
            return tuple(int(d) for d in self._ctx.get_tensor_shape(self.out_name))
        return tuple(int(d) for d in self._ctx.get_binding_shape(self._out_idx))

    def _execute(self) -> None:
        handle = self._cuda.stream_handle(self._stream)
        if self._v3:
            ok = self._ctx.execute_async_v3(handle)
        else:
            bindings = [0] * self._n_bindings
            bindings[self._in_idx] = CudaRuntime.address(self._d_in)
            bindings[self._out_idx] = CudaRuntime.address(self._d_out)
            ok = self._ctx.execute_async_v2(bindings, handle)
        if ok is False:
            raise RuntimeError(f"TensorRT enqueue failed: {' | '.join(self._logger.errors()[-2:])}")

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        n = chunk.shape[0]
        feed = self.max_batch if not self.dynamic else n
        if n != self._current_batch and self.dynamic:
            self._set_batch(n)
            self._current_batch = n
        self._h_in[:n] = chunk
        if feed > n:  # a fixed-batch engine: pad the tail, drop its outputs
            self._h_in[n:feed] = 0
        h_in = self._h_in[:feed]
        h_out = self._h_out[:feed]
        self._cuda.htod_async(self._d_in, h_in, self._stream)
        self._execute()
        self._cuda.dtoh_async(h_out, self._d_out, self._stream)
        self._cuda.stream_sync(self._stream)
        return h_out[:n].copy()

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = np.ascontiguousarray(single_feed(feeds, self.in_name), dtype=self.in_dtype)
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"input shape {x.shape} does not match the engine's (N,) + {self.sample_shape}")
        if x.shape[0] <= self.max_batch:
            return [self._run_chunk(x)]
        return [np.concatenate([self._run_chunk(x[i:i + self.max_batch])
                                for i in range(0, x.shape[0], self.max_batch)])]

    def synchronize(self) -> None:
        if self._stream is not None:
            self._cuda.stream_sync(self._stream)

    def close(self) -> None:
        for arr in self._hosts:
            self._cuda.host_free(arr)
        self._hosts = []
        for b in self._bufs:
            self._cuda.free(b)
        self._bufs = []
        if self._stream is not None:
            self._cuda.stream_destroy(self._stream)
            self._stream = None
        self._ctx = self._engine = None
        self._cuda.deactivate()
