"""A new user's first minutes, against an INSTALLED activation_steering (CI's install check).

Imports the package from site-packages (never the source tree), then train -> steer
-> respond on a tiny random-weight Llama with an offline tokenizer (tests/tiny_models.py,
put on sys.path by the caller; no hub). The ATen ops compile at first use here, into
$ACTIVATION_STEERING_CACHE; the time is printed. Exits non-zero on any failure.
"""
from __future__ import annotations

import sys
import time
import warnings

t0 = time.perf_counter()
import activation_steering  # noqa: E402
from activation_steering import _core  # noqa: E402

assert "site-packages" in activation_steering.__file__, activation_steering.__file__
assert _core.version() == activation_steering.__version__, (_core.version(), activation_steering.__version__)
print(f"import {activation_steering.__version__} from {activation_steering.__file__}: {time.perf_counter() - t0:.1f} s")

import torch  # noqa: E402,F401  (not part of the op timing below)

t0 = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)  # the pure-torch fallback warning fails the check
    from activation_steering.native import ops  # noqa: E402

    assert ops.HAVE_COMPILED_OPS, "the ATen ops did not compile at first use"
print(f"first use of the ATen ops (compile + load, or cache hit): {time.perf_counter() - t0:.1f} s")
from activation_steering import MalleableModel, SteeringDataset, SteeringVector  # noqa: E402

from tiny_models import make_model, make_tokenizer  # noqa: E402

model, tokenizer = make_model("llama"), make_tokenizer()
dataset = SteeringDataset(tokenizer, [("I love it", "I hate it"), ("Great day", "Awful day"), ("Yes", "No")])
vector = SteeringVector.train(model, tokenizer, dataset, method="pca_center", accumulate_last_x_tokens="all")
assert len(vector.directions) == 4, sorted(vector.directions)
mm = MalleableModel(model, tokenizer)
base = mm.respond("Tell me about your weekend.", settings={"max_new_tokens": 6})
mm.steer(behavior_vector=vector, behavior_layer_ids=[1, 2], behavior_vector_strength=8.0)
steered = mm.respond_batch(["Tell me about your weekend.", "Hi"], settings={"max_new_tokens": 6})
assert len(steered) == 2 and all(isinstance(s, str) for s in steered)
mm.reset_leash_to_default()
assert mm.respond("Tell me about your weekend.", settings={"max_new_tokens": 6}) == base
print("smoke test passed: train, steer, respond_batch, reset", file=sys.stderr)
