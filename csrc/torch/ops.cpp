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


/* ------------------------------------------------------------------------ */
/*  steer_layer: the whole per-layer steering step (steering runtime issue)  */
/* ------------------------------------------------------------------------ */

/* steer_layer(hidden[B,T,D], state[B] int64 (MUTATED), token_mask[B,T]?,
 *             cond_dirs[K,D] f32?, cond_thresholds[K] f32?, cond_codes[K,3] int64?,
 *             beh_vecs[M,D] (hidden's dtype)?, beh_tables[M,S]?, ooi) -> [B,T,D]
 *
 * One call per steered decoder layer, on the layer's input h_in (SPEC 4):
 *
 * 1. Conditions (when cond_dirs is given; the hook passes them on a prompt pass
 *    only). Row b is pooled over its real tokens (token_mask[b] != 0; no mask = all
 *    real): the float32 mean, or the last real token (a row without any real
 *    token pools to zeros). Per condition k, with
 *    c = cond_dirs[k]:  sim = cos(h, tanh(c * (c.h)/(c.c)))  (eps 1e-8: the formula
 *    and ops of similarity.condition_similarity, float32, dot products summed
 *    elementwise, so equal to it up to summation order), met = sim > thr[k] if cond_codes[k,1]
 *    ("smaller") else sim < thr[k] ("larger"). cond_codes[k] = (bit value 1<<j of
 *    condition j, comparator 1=smaller/0=larger, pooling 1=last/0=mean).
 *    state[b] |= bits of the met conditions  — in place, on the device.
 * 2. Behaviours (when beh_vecs is given), in order k = 0..M-1, using the state
 *    AFTER step 1: out = out + gate[k,b] * beh_vecs[k] at every position, where
 *    gate[k,b] = beh_tables[k, state[b]] (a truth table over condition bitmasks,
 *    as_rules.h; uint8, bool, or 0/1 already in hidden's dtype, which saves a
 *    conversion per call), or 1 when beh_tables is None (unconditional). gate is
 *    0 or 1, so an active behaviour adds exactly (h + v) and an inactive one
 *    leaves h bit for bit.
 * 3. OOI preventive normalisation (ooi, behaviour layers only): per row, if at
 *    any real position ||out|| > ||hidden|| or out has a NaN/Inf, every position
 *    of that row is rescaled to its norm before step 2: out * (||hidden||/||out||)
 *    (norms and the rescale in float32, then cast back). Rows are independent.
 *
 * Returns a new contiguous tensor (a copy of hidden when no behaviour is given).
 * No value is read back to the host. */
at::Tensor steer_layer(const at::Tensor &hidden, at::Tensor &state, const std::optional<at::Tensor> &token_mask,
                       const std::optional<at::Tensor> &cond_dirs, const std::optional<at::Tensor> &cond_thresholds,
                       const std::optional<at::Tensor> &cond_codes, const std::optional<at::Tensor> &beh_vecs,
                       const std::optional<at::Tensor> &beh_tables, bool ooi) {
    TORCH_CHECK(hidden.dim() == 3, "steer_layer: hidden must be [B, T, D], got ", hidden.sizes());
    const auto B = hidden.size(0), T = hidden.size(1), D = hidden.size(2);
    const auto dev = hidden.device();
    TORCH_CHECK(state.dim() == 1 && state.size(0) == B && state.scalar_type() == at::kLong && state.device() == dev,
                "steer_layer: state must be int64 [B] on the hidden state's device, got ", state.sizes(), " ",
                state.scalar_type());
    std::optional<at::Tensor> real;  // [B, T] bool
    if (token_mask.has_value()) {
        const auto &m = *token_mask;
        TORCH_CHECK(m.dim() == 2 && m.size(0) == B && m.size(1) == T && m.device() == dev,
                    "steer_layer: token_mask must be [B, T] on the hidden state's device, got ", m.sizes());
        real = m.ne(0);
    }

    if (cond_dirs.has_value()) {
        const auto &c = *cond_dirs;
        TORCH_CHECK(cond_thresholds.has_value() && cond_codes.has_value(),
                    "steer_layer: cond_dirs needs cond_thresholds and cond_codes");
        const auto &thr = *cond_thresholds;
        const auto &codes = *cond_codes;
        const auto K = c.size(0);
        TORCH_CHECK(c.dim() == 2 && c.size(1) == D && c.scalar_type() == at::kFloat && c.device() == dev,
                    "steer_layer: cond_dirs must be float32 [K, D] on the hidden state's device, got ", c.sizes());
        TORCH_CHECK(thr.dim() == 1 && thr.size(0) == K && thr.scalar_type() == at::kFloat && thr.device() == dev,
                    "steer_layer: cond_thresholds must be float32 [K]");
        TORCH_CHECK(codes.dim() == 2 && codes.size(0) == K && codes.size(1) == 3 && codes.scalar_type() == at::kLong &&
                        codes.device() == dev,
                    "steer_layer: cond_codes must be int64 [K, 3]");
        if (K > 0) {
            auto hf = hidden.to(at::kFloat);                                               // [B, T, D]
            at::Tensor mean, last_idx;
            if (real.has_value()) {
                auto w = real->to(at::kFloat);                                             // [B, T]
                auto count = w.sum(1, /*keepdim=*/true).clamp_min(1.0);                    // [B, 1]
                mean = hf.mul(w.unsqueeze(-1)).sum(1).div(count);                          // [B, D]
                auto pos = at::arange(1, T + 1, real->options().dtype(at::kLong));         // [T]
                last_idx = real->to(at::kLong).mul(pos).amax(1).sub(1).clamp_min(0);       // [B]
            } else {
                mean = hf.mean(1);
                last_idx = at::full({B}, T - 1, state.options());
            }
            auto last = hf.gather(1, last_idx.view({B, 1, 1}).expand({B, 1, D})).squeeze(1);  // [B, D]
            if (real.has_value()) last = last.mul(real->any(1, /*keepdim=*/true).to(at::kFloat));  // no real token: 0
            auto use_last = codes.select(1, 2).ne(0).view({1, K, 1});
            auto pooled = at::where(use_last, last.unsqueeze(1), mean.unsqueeze(1));     // [B, K, D]
            auto coef = pooled.mul(c).sum(-1).div(c.mul(c).sum(-1));                       // [B, K]
            auto proj = at::tanh(coef.unsqueeze(-1).mul(c));                               // [B, K, D]
            auto sim = at::cosine_similarity(pooled, proj, -1, 1e-8);                      // [B, K]
            auto smaller = codes.select(1, 1).ne(0);                                       // [K]
            auto met = at::where(smaller, sim.gt(thr), sim.lt(thr));                       // [B, K]
            state.bitwise_or_(met.to(at::kLong).mul(codes.select(1, 0)).sum(1));
        }
    }

    if (!beh_vecs.has_value()) return hidden.clone(at::MemoryFormat::Contiguous);
    const auto &v = *beh_vecs;
    TORCH_CHECK(v.dim() == 2 && v.size(1) == D && v.scalar_type() == hidden.scalar_type() && v.device() == dev,
                "steer_layer: beh_vecs must be [M, D] with the hidden state's dtype and device, got ", v.sizes(), " ",
                v.scalar_type());
    const auto M = v.size(0);
    std::optional<at::Tensor> gate;  // [M, B] in hidden's dtype
    if (beh_tables.has_value()) {
        const auto &tab = *beh_tables;
        TORCH_CHECK(tab.dim() == 2 && tab.size(0) == M && tab.size(1) >= 1 && tab.device() == dev &&
                        (tab.scalar_type() == at::kByte || tab.scalar_type() == at::kBool ||
                         tab.scalar_type() == hidden.scalar_type()),
                    "steer_layer: beh_tables must be [M, 2^C] of 0/1 (uint8, bool or the hidden state's dtype) "
                    "on the hidden state's device");
        gate = tab.index_select(1, state).to(hidden.scalar_type());  // no copy when already in that dtype
    }
    at::Tensor out = hidden;
    for (int64_t k = 0; k < M; k++) {
        auto vk = v.select(0, k).view({1, 1, D});
        out = gate.has_value() ? at::addcmul(out, gate->select(0, k).view({B, 1, 1}), vk) : at::add(out, vk);
    }
    if (M == 0) return hidden.clone(at::MemoryFormat::Contiguous);
    if (ooi) {
        auto pre = at::linalg_vector_norm(hidden.to(at::kFloat), 2, {-1}, false, std::nullopt);  // [B, T]
        auto outf = out.to(at::kFloat);
        auto post = at::linalg_vector_norm(outf, 2, {-1}, false, std::nullopt);
        auto bad = post.gt(pre).logical_or(out.isfinite().logical_not().any(-1));          // [B, T]
        if (real.has_value()) bad = bad.logical_and(*real);
        auto rescale = bad.any(1).view({B, 1, 1});                                           // [B, 1, 1]
        auto scaled = outf.mul(pre.div(post).unsqueeze(-1)).to(out.scalar_type());
        out = at::where(rescale, scaled, out);
    }
    return out.contiguous();
}

}  // namespace activation_steering

TORCH_LIBRARY(activation_steering, m) {
    m.def("pool_spans(Tensor hidden, Tensor start, Tensor end) -> Tensor");
    m.def("steer_layer(Tensor hidden, Tensor(a!) state, Tensor? token_mask, Tensor? cond_dirs, Tensor? cond_thresholds, "
          "Tensor? cond_codes, Tensor? beh_vecs, Tensor? beh_tables, bool ooi) -> Tensor");
}

TORCH_LIBRARY_IMPL(activation_steering, CPU, m) {
    m.impl("pool_spans", &activation_steering::pool_spans);
    m.impl("steer_layer", &activation_steering::steer_layer);
}
TORCH_LIBRARY_IMPL(activation_steering, CUDA, m) {
    m.impl("pool_spans", &activation_steering::pool_spans);
    m.impl("steer_layer", &activation_steering::steer_layer);
}

/* The Python module itself is empty: importing it loads this library, which runs
 * the registrations above. */
static struct PyModuleDef torch_ops_module = {
    PyModuleDef_HEAD_INIT, "activation_steering._torch_ops",
    "Loads activation_steering's ATen ops (torch.ops.activation_steering.*).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__torch_ops(void) { return PyModule_Create(&torch_ops_module); }
