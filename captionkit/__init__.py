"""captionkit: recurrent image-captioning models on a CPU."""
__version__ = "0.1.0"
