"""captionkit-lstm: the LSTM cell for captionkit, registered as ``lstm`` in the entry-point group
``captionkit.cells``.

Also exports the numpy reference layers with the CS231n assignment's signatures.
"""
from captionkit_lstm.cell import LSTMCell
from captionkit_lstm.layers import lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward

__version__ = "0.1.0"

__all__ = ["LSTMCell", "lstm_backward", "lstm_forward", "lstm_step_backward", "lstm_step_forward", "__version__"]
