"""The Faust application and the I/O edge of the book-cover processor."""

__version__ = "0.1.0"
