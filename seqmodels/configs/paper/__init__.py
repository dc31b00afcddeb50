"""One config per headline result of the papers, on the real data sets (``seqmodels list``
shows them as ``paper/NAME``). Each docstring gives the paper's number, the official
config it follows, the expected time and the command; ``README.md`` ("Reproduce a paper")
says where to get each data set."""
