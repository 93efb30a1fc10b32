"""The `s2d` command line: one entry point whose sub-commands dispatch to models/, training/ and service/."""
