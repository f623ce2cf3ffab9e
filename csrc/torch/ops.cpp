/*
 * ops.cpp — activation_steering's ATen ops: TORCH_LIBRARY(activation_steering, m).
 *
 * Every op here is written with ATen tensor ops only, so one kernel serves every
 * device the layer may live on (one CompositeExplicitAutograd registration
 * below). Each op has a pure-torch twin in python/activation_steering/oracles/
 * ops.py, used as the test oracle and as the fallback when this library cannot
 * load; its fake kernel (shape and dtype checks included) is registered from
 * Python (native/ops.py) so torch.compile traces it without graph breaks.
 *
 * The condition kernel is similarity_impl: steer_layer evaluates conditions
 * with it, and the condition_similarity op exposes it to the condition search,
 * so the threshold the search returns is applied by the same arithmetic.
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
/*  condition_similarity: THE condition kernel                              */
/* ------------------------------------------------------------------------ */

/* Argument checks shared by condition_similarity and steer_layer. Returns the
 * real-token mask [B, T] bool, or nullopt when token_mask is absent (all real). */
static std::optional<at::Tensor> real_tokens(const char *op, const at::Tensor &hidden,
                                             const std::optional<at::Tensor> &token_mask) {
    TORCH_CHECK(hidden.dim() == 3, op, ": hidden must be [B, T, D], got ", hidden.sizes());
    if (!token_mask.has_value()) return std::nullopt;
    const auto &m = *token_mask;
    TORCH_CHECK(m.dim() == 2 && m.size(0) == hidden.size(0) && m.size(1) == hidden.size(1) &&
                    m.device() == hidden.device(),
                op, ": token_mask must be [B, T] = ", hidden.sizes().slice(0, 2), " on the hidden state's device, got ",
                m.sizes());
    return m.ne(0);
}

static void check_conditions(const char *op, const at::Tensor &hidden, const at::Tensor &dirs,
                             const at::Tensor &codes) {
    const auto D = hidden.size(2);
    TORCH_CHECK(dirs.dim() == 2 && dirs.size(1) == D && dirs.scalar_type() == at::kFloat &&
                    dirs.device() == hidden.device(),
                op, ": cond_dirs must be float32 [K, ", D, "] on the hidden state's device, got ", dirs.sizes(), " ",
                dirs.scalar_type());
    TORCH_CHECK(codes.dim() == 2 && codes.size(0) == dirs.size(0) && codes.size(1) == 3 &&
                    codes.scalar_type() == at::kLong && codes.device() == hidden.device(),
                op, ": cond_codes must be int64 [K, 3] (K = ", dirs.size(0), "), got ", codes.sizes(), " ",
                codes.scalar_type());
}

/* The user's-message mask [B, T] bool (token_mask == 2, see activations/user_text.py),
 * or nullopt when token_mask is absent. */
static std::optional<at::Tensor> user_tokens(const std::optional<at::Tensor> &token_mask) {
    if (!token_mask.has_value()) return std::nullopt;
    return token_mask->eq(2);
}

/* sims[B, K] float32 of row b's pooled residual stream against condition k:
 * pooled by codes[k, 2]: 0 the mean over the real tokens, 1 the last real
 * token, 2 the mean over the user's message (token_mask == 2; all positions
 * without a mask); a row without such tokens pools to zeros. Then
 * sim = cos(h, tanh(c * (c.h)/(c.c))) with eps 1e-8, all in float32. */
static at::Tensor similarity_impl(const at::Tensor &hidden, const std::optional<at::Tensor> &real,
                                  const std::optional<at::Tensor> &user, const at::Tensor &dirs,
                                  const at::Tensor &codes) {
    const auto B = hidden.size(0), T = hidden.size(1), D = hidden.size(2), K = dirs.size(0);
    auto hf = hidden.to(at::kFloat);                                                   // [B, T, D]
    at::Tensor mean, last_idx;
    if (real.has_value()) {
        auto w = real->to(at::kFloat);                                                 // [B, T]
        auto count = w.sum(1, /*keepdim=*/true).clamp_min(1.0);                        // [B, 1]
        mean = hf.mul(w.unsqueeze(-1)).sum(1).div(count);                              // [B, D]
        auto pos = at::arange(1, T + 1, real->options().dtype(at::kLong));             // [T]
        last_idx = real->to(at::kLong).mul(pos).amax(1).sub(1).clamp_min(0);           // [B]
    } else {
        mean = hf.mean(1);
        last_idx = at::full({B}, T - 1, hidden.options().dtype(at::kLong));
    }
    at::Tensor last;
    if (T > 0) {
        last = hf.gather(1, last_idx.view({B, 1, 1}).expand({B, 1, D})).squeeze(1);    // [B, D]
        if (real.has_value()) last = last.mul(real->any(1, /*keepdim=*/true).to(at::kFloat));  // no real token: 0
    } else {
        last = at::zeros({B, D}, hf.options());
        mean = at::zeros({B, D}, hf.options());
    }
    auto pooling = codes.select(1, 2).view({1, K, 1});
    auto pooled = at::where(pooling.eq(1), last.unsqueeze(1), mean.unsqueeze(1));      // [B, K, D]
    if (user.has_value() && T > 0) {                                                   // "user_text"
        auto u = user->to(at::kFloat);                                                 // [B, T]
        auto user_mean = hf.mul(u.unsqueeze(-1)).sum(1).div(u.sum(1, true).clamp_min(1.0));  // [B, D]
        pooled = at::where(pooling.eq(2), user_mean.unsqueeze(1), pooled);
    }
    auto coef = pooled.mul(dirs).sum(-1).div(dirs.mul(dirs).sum(-1));                   // [B, K]
    auto proj = at::tanh(coef.unsqueeze(-1).mul(dirs));                                 // [B, K, D]
    return at::cosine_similarity(pooled, proj, -1, 1e-8);                               // [B, K]
}

/* condition_similarity(hidden[B,T,D], token_mask[B,T]?, cond_dirs[K,D] f32,
 *                      cond_codes[K,3] int64) -> float32[B, K]
 * The condition similarity as steer_layer computes it (same function), for
 * the condition search to record: the threshold it returns is then applied by
 * the very same arithmetic. Only the pooling column of cond_codes is read. */
at::Tensor condition_similarity(const at::Tensor &hidden, const std::optional<at::Tensor> &token_mask,
                                const at::Tensor &cond_dirs, const at::Tensor &cond_codes) {
    auto real = real_tokens("condition_similarity", hidden, token_mask);
    check_conditions("condition_similarity", hidden, cond_dirs, cond_codes);
    return similarity_impl(hidden, real, user_tokens(token_mask), cond_dirs, cond_codes);
}

/* ------------------------------------------------------------------------ */
/*  steer_layer: the whole per-layer steering step                          */
/* ------------------------------------------------------------------------ */

/* 1. Conditions -> state: state[b] |= bit of every condition k that row b meets
 *    (sim > thr if codes[k,1] ("smaller") else sim < thr ("larger")). In place. */
static void evaluate_conditions(const at::Tensor &hidden, at::Tensor &state, const std::optional<at::Tensor> &real,
                                const std::optional<at::Tensor> &user, const at::Tensor &dirs, const at::Tensor &thr,
                                const at::Tensor &codes) {
    if (dirs.size(0) == 0) return;
    auto sim = similarity_impl(hidden, real, user, dirs, codes);                        // [B, K]
    auto smaller = codes.select(1, 1).ne(0);                                            // [K]
    auto met = at::where(smaller, sim.gt(thr), sim.lt(thr));                            // [B, K]
    state.bitwise_or_(met.to(at::kLong).mul(codes.select(1, 0)).sum(1));
}

/* 2. Gated behaviours: out = hidden + sum_k gate[k, b] * v[k], in order k. */
static at::Tensor add_gated_behaviours(const at::Tensor &hidden, const at::Tensor &state, const at::Tensor &v,
                                       const std::optional<at::Tensor> &tables) {
    const auto B = hidden.size(0), D = hidden.size(2), M = v.size(0);
    std::optional<at::Tensor> gate;  // [M, B] in hidden's dtype
    if (tables.has_value()) gate = tables->index_select(1, state).to(hidden.scalar_type());  // no copy when already so
    at::Tensor out = hidden;
    for (int64_t k = 0; k < M; k++) {
        auto vk = v.select(0, k).view({1, 1, D});
        out = gate.has_value() ? at::addcmul(out, gate->select(0, k).view({B, 1, 1}), vk) : at::add(out, vk);
    }
    return out;
}

/* 3. OOI preventive normalisation: rows where some real position grew in norm or
 *    became non-finite are rescaled, every position, to their norms before step 2.
 *    `wide` is step 2's sum computed in float32 when hidden is half precision
 *    (fp16/bf16), so a sum that overflows the narrow dtype is still rescaled from
 *    finite values (inf * 0 would give NaN); hidden's own dtype otherwise. */
static at::Tensor ooi_normalise(const at::Tensor &hidden, const at::Tensor &wide, const std::optional<at::Tensor> &real) {
    const auto B = hidden.size(0);
    auto pre = at::linalg_vector_norm(hidden.to(at::kFloat), 2, {-1}, false, std::nullopt);  // [B, T]
    auto widef = wide.to(at::kFloat);
    auto post = at::linalg_vector_norm(widef, 2, {-1}, false, std::nullopt);
    auto out = wide.to(hidden.scalar_type());
    auto bad = post.gt(pre).logical_or(out.isfinite().logical_not().any(-1));                 // [B, T]
    if (real.has_value()) bad = bad.logical_and(*real);
    auto rescale = bad.any(1).view({B, 1, 1});                                                  // [B, 1, 1]
    auto scaled = widef.mul(pre.div(post).unsqueeze(-1)).to(hidden.scalar_type());
    return at::where(rescale, scaled, out);
}

/* steer_layer(hidden[B,T,D], state[B] int64 (MUTATED), token_mask[B,T]?,
 *             cond_dirs[K,D] f32?, cond_thresholds[K] f32?, cond_codes[K,3] int64?,
 *             beh_vecs[M,D] (hidden's dtype)?, beh_tables[M,S]?, ooi) -> [B,T,D]
 *
 * One call per steered decoder layer, on the layer's input h_in:
 * 1. evaluate_conditions (when cond_dirs is given; the hook passes them on a
 *    prompt pass only): row b's similarities by similarity_impl (the
 *    condition_similarity op), met -> state[b] |= cond_codes[k, 0] (the bit
 *    1 << j of condition j), in place on the device. cond_codes[k] = (bit,
 *    comparator 1 = smaller / 0 = larger, pooling 1 = last / 0 = mean /
 *    2 = user_text: the mean over token_mask == 2).
 * 2. add_gated_behaviours (when beh_vecs is given), using the state AFTER
 *    step 1: gate[k, b] = beh_tables[k, state[b]] (a truth table over condition
 *    bitmasks, as_rules.h; uint8, bool, or 0/1 already in hidden's dtype, which
 *    saves a conversion per call), or 1 when beh_tables is None. gate is 0 or 1,
 *    so an active behaviour adds exactly (h + v), an inactive one leaves h bit
 *    for bit.
 * 3. ooi_normalise (ooi, behaviour layers only), per row, norms and rescale in
 *    float32, then cast back.
 * Returns a new contiguous tensor (a copy of hidden when no behaviour is given).
 * No value is read back to the host. */
at::Tensor steer_layer(const at::Tensor &hidden, at::Tensor &state, const std::optional<at::Tensor> &token_mask,
                       const std::optional<at::Tensor> &cond_dirs, const std::optional<at::Tensor> &cond_thresholds,
                       const std::optional<at::Tensor> &cond_codes, const std::optional<at::Tensor> &beh_vecs,
                       const std::optional<at::Tensor> &beh_tables, bool ooi) {
    auto real = real_tokens("steer_layer", hidden, token_mask);
    const auto B = hidden.size(0), D = hidden.size(2);
    const auto dev = hidden.device();
    TORCH_CHECK(state.dim() == 1 && state.size(0) == B && state.scalar_type() == at::kLong && state.device() == dev,
                "steer_layer: state must be int64 [B] on the hidden state's device, got ", state.sizes(), " ",
                state.scalar_type());
    if (cond_dirs.has_value()) {
        TORCH_CHECK(cond_thresholds.has_value() && cond_codes.has_value(),
                    "steer_layer: cond_dirs needs cond_thresholds and cond_codes");
        check_conditions("steer_layer", hidden, *cond_dirs, *cond_codes);
        const auto &thr = *cond_thresholds;
        TORCH_CHECK(thr.dim() == 1 && thr.size(0) == cond_dirs->size(0) && thr.scalar_type() == at::kFloat &&
                        thr.device() == dev,
                    "steer_layer: cond_thresholds must be float32 [K], got ", thr.sizes(), " ", thr.scalar_type());
    }
    if (beh_vecs.has_value()) {
        const auto &v = *beh_vecs;
        TORCH_CHECK(v.dim() == 2 && v.size(1) == D && v.scalar_type() == hidden.scalar_type() && v.device() == dev,
                    "steer_layer: beh_vecs must be [M, D] with the hidden state's dtype and device, got ", v.sizes(),
                    " ", v.scalar_type());
        if (beh_tables.has_value()) {
            const auto &tab = *beh_tables;
            TORCH_CHECK(tab.dim() == 2 && tab.size(0) == v.size(0) && tab.size(1) >= 1 && tab.device() == dev &&
                            (tab.scalar_type() == at::kByte || tab.scalar_type() == at::kBool ||
                             tab.scalar_type() == hidden.scalar_type()),
                        "steer_layer: beh_tables must be [M, 2^C] of 0/1 (uint8, bool or the hidden state's dtype) "
                        "on the hidden state's device");
        }
    }

    if (cond_dirs.has_value())
        evaluate_conditions(hidden, state, real, user_tokens(token_mask), *cond_dirs, *cond_thresholds, *cond_codes);
    if (!beh_vecs.has_value() || beh_vecs->size(0) == 0) return hidden.clone(at::MemoryFormat::Contiguous);
    if (!ooi) return add_gated_behaviours(hidden, state, *beh_vecs, beh_tables).contiguous();
    if (!c10::isReducedFloatingType(hidden.scalar_type()))
        return ooi_normalise(hidden, add_gated_behaviours(hidden, state, *beh_vecs, beh_tables), real).contiguous();
    auto wide = add_gated_behaviours(hidden.to(at::kFloat), state, beh_vecs->to(at::kFloat), beh_tables);
    return ooi_normalise(hidden, wide, real).contiguous();
}

}  // namespace activation_steering

TORCH_LIBRARY(activation_steering, m) {
    m.def("pool_spans(Tensor hidden, Tensor start, Tensor end) -> Tensor");
    m.def("condition_similarity(Tensor hidden, Tensor? token_mask, Tensor cond_dirs, Tensor cond_codes) -> Tensor");
    m.def("steer_layer(Tensor hidden, Tensor(a!) state, Tensor? token_mask, Tensor? cond_dirs, Tensor? cond_thresholds, "
          "Tensor? cond_codes, Tensor? beh_vecs, Tensor? beh_tables, bool ooi) -> Tensor");
}

/* Written with ATen ops only, so ONE registration serves every backend (CPU,
 * CUDA, ...): CompositeExplicitAutograd. Not CompositeImplicitAutograd: the ops
 * keep their identity under torch.compile (traced through the fake kernels in
 * native/ops.py) and steer_layer mutates `state`. No autograd formula: the
 * Python entry points run the pure-torch twins when gradients are recorded. */
TORCH_LIBRARY_IMPL(activation_steering, CompositeExplicitAutograd, m) {
    m.impl("pool_spans", &activation_steering::pool_spans);
    m.impl("condition_similarity", &activation_steering::condition_similarity);
    m.impl("steer_layer", &activation_steering::steer_layer);
}

/* The Python module itself is empty: importing it loads this library, which runs
 * the registrations above. */
static struct PyModuleDef torch_ops_module = {
    PyModuleDef_HEAD_INIT, "activation_steering._torch_ops",
    "Loads activation_steering's ATen ops (torch.ops.activation_steering.*).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__torch_ops(void) { return PyModule_Create(&torch_ops_module); }
