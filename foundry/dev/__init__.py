"""The local stack behind `make demo` and `foundry dev ...`: the Linear, GitHub
and model stand-ins, the control plane, the real node and the local images.
Its extra dependencies are the `dev` extra (`pip install 'foundry[dev]'`)."""
