"""Training and evaluation: ingest MIDI and scores, augment, train (DDP-ready), evaluate.

Modules import one way: data, augment, metrics (numpy only) <- loop, evaluate (torch) <- commands;
throughput (training notes per second of any recipe, for `livegen bench train`) uses loop.
"""
