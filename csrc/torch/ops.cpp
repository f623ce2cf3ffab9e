/*
 * ops.cpp — activation_steering's ATen ops: TORCH_LIBRARY(activation_steering, m).
 *
 * Every op here is written with ATen tensor ops only, so one kernel serves every
 * device the layer may live on (registered for CPU and CUDA below). Each op has
 * a pure-torch twin in python/activation_steering/_reference.py, used as the test
 * oracle and as the fallback when this library cannot load; its fake (meta)
 * kernel is registered from Python (_ops.py) so torch.compile traces it without
 * graph breaks.
 *
 * Shapes: B batch rows, T positions, D hidden size.
 */
#include <Python.h>

#include <ATen/ATen.h>
#include <torch/library.h>

namespace activation_steering {

/* pool_spans(hidden[B,T,D], start[B] int64, end[B] int64) -> float32[B,D]
 * Row b: mean of hidden[b, start[b]:end[b], :] in float32. An empty span
 * (end <= start) yields zeros; callers guarantee non-empty spans. */
at::Tensor pool_spans(const at::Tensor &hidden, const at::Tensor &start, const at::Tensor &end) {
    TORCH_CHECK(hidden.dim() == 3, "pool_spans: hidden must be [B, T, D], got ", hidden.sizes());
    TORCH_CHECK(start.dim() == 1 && end.dim() == 1, "pool_spans: start and end must be 1-D");
    TORCH_CHECK(start.size(0) == hidden.size(0) && end.size(0) == hidden.size(0),
                "pool_spans: start/end length must equal the batch size ", hidden.size(0));
    TORCH_CHECK(start.scalar_type() == at::kLong && end.scalar_type() == at::kLong,
                "pool_spans: start and end must be int64");
    const auto T = hidden.size(1);
    auto pos = at::arange(T, start.options()).unsqueeze(0);                        // [1, T]
    auto in_span = pos.ge(start.unsqueeze(1)).logical_and(pos.lt(end.unsqueeze(1))); // [B, T]
    auto weight = in_span.to(at::kFloat);
    auto count = weight.sum(1, /*keepdim=*/true).clamp_min(1.0);                   // [B, 1]
    weight = weight.div(count);
    return at::bmm(weight.unsqueeze(1), hidden.to(at::kFloat)).squeeze(1);          // [B, D]
}

}  // namespace activation_steering

TORCH_LIBRARY(activation_steering, m) {
    m.def("pool_spans(Tensor hidden, Tensor start, Tensor end) -> Tensor");
}

TORCH_LIBRARY_IMPL(activation_steering, CPU, m) { m.impl("pool_spans", &activation_steering::pool_spans); }
TORCH_LIBRARY_IMPL(activation_steering, CUDA, m) { m.impl("pool_spans", &activation_steering::pool_spans); }

/* The Python module itself is empty: importing it loads this library, which runs
 * the registrations above. */
static struct PyModuleDef torch_ops_module = {
    PyModuleDef_HEAD_INIT, "activation_steering._torch_ops",
    "Loads activation_steering's ATen ops (torch.ops.activation_steering.*).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__torch_ops(void) { return PyModule_Create(&torch_ops_module); }
