"""`make bench`: the split stack against transformers' unsplit generate(), measured in one run."""
