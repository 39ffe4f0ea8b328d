"""The synthetic benchmark: markets with a known oracle (generator), their oracle and the file cache."""
