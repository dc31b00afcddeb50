"""seqmodels: interchangeable sequence mixers on one core of parallel scans."""

__version__ = "0.1.0"
