"""The note model: tokens, the LSTM, sampling, checkpoints and streaming prediction."""
