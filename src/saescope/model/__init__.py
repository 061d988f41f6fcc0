"""The language model under study: loading, per-family architecture, the one hook layer, activations,
likelihoods, generation and the fast CPU decode path."""
