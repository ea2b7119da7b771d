"""Layer 3: the lowerings: portable lax forms, the CPU formulations, the CPU path rules and the XLA-CPU workarounds."""
