"""The user's entry points: the `dp` command line (cli.py, handlers.py), the REPL, the box
diagrams of `dp show`, the loss plots of `dp plot`, and the module summaries of `dp check`.
The only layer that prints to the terminal or exits."""
