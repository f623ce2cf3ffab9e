"""Reading the residual stream: decoder-stack discovery (layers.py), the one
truncated-forward runner (runner.py), prompt formatting (prompts.py), token spans
and batches (tokens.py), prefix sharing (prefix_sharing.py) and pooled capture
(pooled.py). See docs/architecture.md."""
