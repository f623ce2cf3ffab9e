"""Steering a model in place: steer/multisteer arguments -> per-layer plan (plan.py),
per-model state and the prompt watcher (state.py), the batched greedy loop of
respond_batch (decode.py). The per-layer hook is leash_layer.LeashLayer."""
