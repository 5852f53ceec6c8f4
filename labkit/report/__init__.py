"""Running notebooks (papermill over private kernels), HTML and PDF, the index page, and comparing two
reports."""
