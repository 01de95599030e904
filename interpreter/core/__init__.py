"""The runtime core: a checked module -> a plan of primitives (lower, fuse) -> values and
gradients (execute), with the primitives' shape rules, forward and backward kernels, the flat
parameter buffer and the optimizers. Imports nothing from data, training or commands."""
