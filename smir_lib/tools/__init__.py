"""The command line (``smir``) and the jobs it runs that are not training: predict and export."""
