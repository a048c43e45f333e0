"""Model access: loading a checkpoint (built-in names, folders, hub ids) with its family
adapter, the processors' geometry, a device-independent identity of weights and
processor, and capture of activations at the sites (on nnsight)."""
