"""The compiled side seen from Python: ops.py loads the ATen ops (steer_layer,
pool_spans) with their fallbacks. The C core itself is activation_steering._core."""
